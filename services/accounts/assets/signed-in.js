// The default redirect_to of a social sign-in. Without a code it starts one: a PKCE verifier kept in
// this tab's sessionStorage, its S256 challenge sent to /api/auth/{provider}/authorize. With a code it
// redeems it at /api/auth/token, finishes a second factor when the account has one, and shows who
// signed in. The tokens stay in this page's memory only.
const config = document.getElementById("config").dataset;
const api = (path) => new URL(path, config.apiBase);
const message = document.getElementById("message");
const STORE = "accounts-social-verifier";

const base64url = (bytes) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function fail(text) {
  message.className = "error";
  message.textContent = text;
}

async function start(provider) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(STORE, JSON.stringify({ verifier, state }));
  const url = api(`api/auth/${encodeURIComponent(provider)}/authorize`);
  url.search = new URLSearchParams({ redirect_to: config.redirectTo, code_challenge: challenge, code_challenge_method: "S256", state });
  window.location.assign(url);
}

function show(user) {
  document.getElementById("title").textContent = "Signed in";
  document.getElementById("intro").hidden = true;
  document.getElementById("buttons").hidden = true;
  document.getElementById("mfa").hidden = true;
  document.getElementById("user-email").textContent = user.email;
  document.getElementById("user-username").textContent = user.username || "—";
  document.getElementById("user-name").textContent = [user.first_name, user.last_name].filter(Boolean).join(" ") || "—";
  document.getElementById("user").hidden = false;
  message.className = "ok";
  message.textContent = `Signed in as ${user.email}.`;
}

async function post(path, body) {
  const response = await fetch(api(path), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (_) {}
  return { ok: response.ok, answer };
}

function secondFactor(challenge) {
  const form = document.getElementById("mfa");
  form.hidden = false;
  message.className = "";
  message.textContent = "This account has two-step verification.";
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = document.getElementById("mfa-code").value.trim();
    const body = /^\d{6}$/.test(value) ? { challenge, code: value } : { challenge, recovery_code: value };
    const { ok, answer } = await post("api/users/login/mfa", body);
    if (ok && answer.user) return show(answer.user);
    fail(Object.values(answer.errors || {}).flat().join(" ") || "The code was not accepted.");
  });
}

async function finish(params) {
  const kept = JSON.parse(sessionStorage.getItem(STORE) || "null");
  sessionStorage.removeItem(STORE);
  history.replaceState(null, "", window.location.pathname);
  // Nothing from the query is shown unless this tab started the sign-in it answers.
  if (!kept || kept.state !== params.get("state")) return fail("This sign-in was not started in this tab. Start again.");
  if (params.get("error")) return fail(params.get("error_description") || params.get("error"));
  const { ok, answer } = await post("api/auth/token", { code: params.get("code"), code_verifier: kept.verifier });
  if (ok && answer.user) return show(answer.user);
  if (ok && answer.mfa) return secondFactor(answer.mfa.challenge);
  fail(Object.values(answer.errors || {}).flat().join(" ") || "The sign-in failed.");
}

const params = new URLSearchParams(window.location.search);
if (params.has("code") || params.has("error")) {
  finish(params);
} else if (config.start) {
  start(config.start);
} else {
  const buttons = document.getElementById("buttons");
  const providers = config.providers ? config.providers.split(",") : [];
  if (providers.length === 0) fail("No social login provider is configured (ACCOUNTS_SOCIAL_PROVIDERS).");
  for (const provider of providers) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = `sign-in-${provider}`;
    button.textContent = `Sign in with ${provider}`;
    button.addEventListener("click", () => start(provider));
    buttons.append(button);
  }
}
