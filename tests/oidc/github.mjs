// A stand-in for GitHub's OAuth app flow and the REST API calls a social login makes, in the shapes of
// GitHub's documentation (github.com cannot be reached from tests). No UI: the authorize endpoint signs in
// the current user at once. Only node's own modules, so it needs no install.
//
// Env: PORT (0 = any free port) and GITHUB_CONFIG, JSON:
//   {"client_id", "client_secret", "redirect_uris": [...],
//    "user": {"id": 123, "login", "name", "avatar_url", "email"},
//    "emails": [{"email", "primary", "verified", "visibility"}]}
// Prints one line on stdout once listening: {"base_url":"http://127.0.0.1:<port>"}.
// Routes: GET /login/oauth/authorize, POST /login/oauth/access_token, GET /api/user, GET /api/user/emails.
// Test control (this server only): PUT /_test/user {"user": {...}, "emails": [...]} replaces the current
// user; PUT /_test/deny-next {} makes the next authorization end as if the user clicked "Cancel".
import crypto from "node:crypto";
import http from "node:http";

const config = JSON.parse(process.env.GITHUB_CONFIG ?? "{}");
const docs = "https://docs.github.com";
const codeLifetimeMs = 10 * 60 * 1000;

let current = { user: config.user ?? {}, emails: config.emails ?? [] };
let denyNext = false;
/** code → {redirectUri, challenge, scopes, account, expires}; a code is spent by any redemption. */
const codes = new Map();
/** access token → {scopes, account} */
const tokens = new Map();

const random = (bytes) => crypto.randomBytes(bytes).toString("hex");

/** The user as GET /user shows it: the configured fields over GitHub's usual ones. */
function userJson(user, base) {
  const login = user.login ?? `user${user.id}`;
  return {
    login,
    id: user.id,
    node_id: Buffer.from(`04:User${user.id}`).toString("base64"),
    avatar_url: `https://avatars.githubusercontent.com/u/${user.id}?v=4`,
    html_url: `${base}/${login}`,
    url: `${base}/api/users/${login}`,
    type: "User",
    site_admin: false,
    name: null,
    company: null,
    blog: "",
    location: null,
    email: null,
    bio: null,
    created_at: "2020-01-01T00:00:00Z",
    updated_at: "2020-01-01T00:00:00Z",
    ...user,
  };
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", ...headers });
  res.end(JSON.stringify(body));
}

function redirect(res, target, params) {
  const url = new URL(target);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined) {
      url.searchParams.set(key, value);
    }
  }
  res.writeHead(302, { Location: url.href }).end();
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function authorize(url, res) {
  const q = url.searchParams;
  if (q.get("client_id") !== config.client_id) {
    res.writeHead(404, { "Content-Type": "text/plain" }).end("Not Found\n");
    return;
  }
  const registered = config.redirect_uris ?? [];
  const state = q.get("state") ?? undefined;
  const redirectUri = q.get("redirect_uri") ?? registered[0];
  if (!registered.includes(redirectUri)) {
    // GitHub sends the browser to the registered callback with the error.
    redirect(res, registered[0], {
      error: "redirect_uri_mismatch",
      error_description: "The redirect_uri MUST match the registered callback URL for this application.",
      error_uri: `${docs}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch`,
      state,
    });
    return;
  }
  const challenge = q.get("code_challenge");
  const method = q.get("code_challenge_method") ?? "plain";
  if (challenge !== null && method !== "S256") {
    redirect(res, redirectUri, {
      error: "invalid_request",
      error_description: "code_challenge_method must be S256",
      state,
    });
    return;
  }
  if (denyNext) {
    denyNext = false;
    redirect(res, redirectUri, {
      error: "access_denied",
      error_description: "The user has denied your application access.",
      error_uri: `${docs}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied`,
      state,
    });
    return;
  }
  const code = random(10);
  codes.set(code, {
    redirectUri,
    challenge,
    scopes: (q.get("scope") ?? "").split(/[\s,]+/).filter(Boolean),
    account: structuredClone(current),
    expires: Date.now() + codeLifetimeMs,
  });
  redirect(res, redirectUri, { code, state });
}

function tokenError(res, json, error, description) {
  const body = { error, error_description: description, error_uri: `${docs}/apps/oauth-apps` };
  if (json) {
    send(res, 200, body);
  } else {
    res.writeHead(200, { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" });
    res.end(new URLSearchParams(body).toString());
  }
}

async function accessToken(req, res) {
  const form = new URLSearchParams(await readBody(req));
  const json = (req.headers.accept ?? "").includes("application/json");
  let clientId = form.get("client_id");
  let clientSecret = form.get("client_secret");
  const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? "");
  if (basic) {
    const decoded = Buffer.from(basic[1], "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    try {
      clientId = decodeURIComponent(decoded.slice(0, Math.max(colon, 0)));
      clientSecret = decodeURIComponent(decoded.slice(colon + 1));
    } catch {
      clientId = null;
    }
  }
  const code = form.get("code") ?? "";
  const grant = codes.get(code);
  codes.delete(code);
  if (clientId !== config.client_id || clientSecret !== config.client_secret) {
    tokenError(res, json, "incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.");
    return;
  }
  if (!grant || grant.expires < Date.now()) {
    tokenError(res, json, "bad_verification_code", "The code passed is incorrect or expired.");
    return;
  }
  const redirectUri = form.get("redirect_uri");
  if (redirectUri !== null && redirectUri !== grant.redirectUri) {
    tokenError(res, json, "redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.");
    return;
  }
  if (grant.challenge !== null) {
    const verifier = form.get("code_verifier") ?? "";
    const computed = crypto.createHash("sha256").update(verifier).digest("base64url");
    if (computed !== grant.challenge) {
      tokenError(res, json, "bad_verification_code", "The code passed is incorrect or expired.");
      return;
    }
  }
  const token = `gho_${random(18)}`;
  tokens.set(token, { scopes: grant.scopes, account: grant.account });
  const answer = { access_token: token, token_type: "bearer", scope: grant.scopes.join(",") };
  if (json) {
    send(res, 200, answer);
  } else {
    res.writeHead(200, { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" });
    res.end(new URLSearchParams(answer).toString());
  }
}

function api(req, res, path, base) {
  if (!req.headers["user-agent"]) {
    res.writeHead(403, { "Content-Type": "text/plain; charset=utf-8" });
    res.end(
      "Request forbidden by administrative rules. Please make sure your request has a User-Agent header "
        + `(${docs}/en/rest/overview/resources-in-the-rest-api#user-agent-required). `
        + "Check https://developer.github.com for other possible causes.\n",
    );
    return;
  }
  const credentials = /^(?:Bearer|token)\s+(\S+)$/i.exec(req.headers.authorization ?? "");
  const grant = credentials && tokens.get(credentials[1]);
  if (!grant) {
    send(res, 401, { message: "Bad credentials", documentation_url: `${docs}/rest`, status: "401" });
    return;
  }
  const headers = { "X-OAuth-Scopes": grant.scopes.join(", ") };
  const scoped = (scope) => grant.scopes.includes(scope) || grant.scopes.includes("user");
  if (path === "/api/user") {
    send(res, 200, userJson(grant.account.user, base), headers);
  } else if (path === "/api/user/emails" && scoped("user:email")) {
    send(res, 200, grant.account.emails, headers);
  } else {
    send(res, 404, { message: "Not Found", documentation_url: `${docs}/rest`, status: "404" }, headers);
  }
}

async function control(req, res, path) {
  if (req.method !== "PUT") {
    res.writeHead(405, { Allow: "PUT" }).end();
    return;
  }
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch {
    body = undefined;
  }
  if (path === "/_test/user" && body?.user && typeof body.user === "object" && Array.isArray(body.emails)) {
    current = { user: body.user, emails: body.emails };
  } else if (path === "/_test/deny-next") {
    denyNext = true;
  } else {
    res.writeHead(400, { "Content-Type": "text/plain" }).end("expected {\"user\": {...}, \"emails\": [...]}\n");
    return;
  }
  res.writeHead(204).end();
}

const server = http.createServer((req, res) => {
  const base = `http://127.0.0.1:${server.address().port}`;
  const url = new URL(req.url, base);
  const route = `${req.method} ${url.pathname}`;
  let answered;
  if (route === "GET /login/oauth/authorize") {
    answered = authorize(url, res);
  } else if (route === "POST /login/oauth/access_token") {
    answered = accessToken(req, res);
  } else if (req.method === "GET" && url.pathname.startsWith("/api/")) {
    answered = api(req, res, url.pathname, base);
  } else if (url.pathname.startsWith("/_test/")) {
    answered = control(req, res, url.pathname);
  } else {
    answered = send(res, 404, { message: "Not Found", documentation_url: `${docs}/rest` });
  }
  Promise.resolve(answered).catch((error) => {
    console.error("github stand-in failed:", error);
    if (!res.headersSent) {
      res.writeHead(500).end();
    }
  });
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ base_url: `http://127.0.0.1:${server.address().port}` })}\n`);
});
