// A real OpenID Connect provider for tests: oidc-provider (OpenID Certified) on loopback, with its own
// development login form and consent page, so a browser (or testkit's HTTP driver) signs in for real.
//
// Env: PORT (0 = any free port) and OIDC_CONFIG, JSON:
//   {"clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
//    "accounts": {"<login name>": {"sub", "email", "email_verified", "name", "preferred_username", "picture"}}}
// Prints one line on stdout once listening: {"issuer":"http://127.0.0.1:<port>"}; everything else goes
// to stderr. Test control (this server only): PUT /_test/accounts/<login> with a JSON object of claims
// adds or replaces an account.
import crypto from "node:crypto";
import http from "node:http";

import Provider from "oidc-provider";

// oidc-provider prints its notices with console.info, which is stdout: keep stdout for the ready line.
console.info = console.error;
console.log = console.error;

const config = JSON.parse(process.env.OIDC_CONFIG ?? "{}");
const accounts = new Map(Object.entries(config.accounts ?? {}));

/** The subject a login name signs in as: its configured `sub`, else the login name itself. */
function subjectOf(login) {
  return accounts.get(login)?.sub ?? login;
}

/** The claims of a subject: the configured account's, or made up from the login name for any other. */
function claimsOf(sub) {
  for (const [login, claims] of accounts) {
    if ((claims.sub ?? login) === sub) {
      return { ...claims, sub };
    }
  }
  return { sub, email: `${sub}@example.test`, email_verified: true, name: sub };
}

/** The test-control routes, answered before the provider sees the request; false when not one. */
async function control(req, res) {
  const match = /^\/_test\/accounts\/([^/?]+)$/.exec(req.url);
  if (!match) {
    return false;
  }
  if (req.method !== "PUT") {
    res.writeHead(405, { Allow: "PUT" }).end();
    return true;
  }
  let claims;
  try {
    const chunks = [];
    for await (const chunk of req) {
      chunks.push(chunk);
    }
    claims = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    claims = undefined;
  }
  if (claims === null || typeof claims !== "object" || Array.isArray(claims)) {
    res.writeHead(400, { "Content-Type": "text/plain" }).end("the body must be a JSON object of claims\n");
    return true;
  }
  accounts.set(decodeURIComponent(match[1]), claims);
  res.writeHead(204).end();
  return true;
}

// Ephemeral keys: a signing key for ID tokens (RS256, which every relying party verifies) and cookie keys.
const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), use: "sig", alg: "RS256", kid: crypto.randomUUID() };

const server = http.createServer();
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: (config.clients ?? []).map(({ client_id, client_secret, redirect_uris }) => ({
      client_id,
      client_secret,
      redirect_uris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    })),
    // Basic and post are interchangeable for a client registered with either (oidc-provider 9).
    clientAuthMethods: ["client_secret_basic", "client_secret_post"],
    pkce: { required: () => true },
    // The email scope's claims go to userinfo only (conformIdTokenClaims): as at most providers.
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name", "preferred_username", "picture"],
    },
    cookies: { keys: [crypto.randomBytes(32).toString("base64url")] },
    jwks: { keys: [signingKey] },
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: true },
    },
    // oidc-provider 9 takes `sub` from accountId, never from claims(): the account id is the subject.
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return claimsOf(sub);
        },
      };
    },
  });
  // The dev login form finishes its interaction with the login name typed in as the account id;
  // sign in the subject of that login instead, so a configured `sub` can differ from the login name.
  const finishInteraction = provider.interactionFinished.bind(provider);
  provider.interactionFinished = (req, res, result, options) => {
    const login = result?.login;
    const translated = login ? { ...result, login: { ...login, accountId: subjectOf(login.accountId) } } : result;
    return finishInteraction(req, res, translated, options);
  };
  // The dev pages import a web font from a CDN; a browser here must load nothing from outside.
  provider.use(async (ctx, next) => {
    await next();
    if (typeof ctx.body === "string" && ctx.response.is("html")) {
      ctx.body = ctx.body.replace(/@import url\([^)]*\);?/g, "");
    }
  });
  provider.on("server_error", (_ctx, error) => console.error("oidc-provider server_error:", error));

  const handle = provider.callback();
  server.on("request", (req, res) => {
    control(req, res)
      .then((answered) => answered || handle(req, res))
      .catch((error) => {
        console.error("test control failed:", error);
        if (!res.headersSent) {
          res.writeHead(500).end();
        }
      });
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
