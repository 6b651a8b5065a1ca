// Headless Chromium against the running stack: the confirm link and the reset link from real mail
// captured by MailDev, the pages they open, the reset form, a login with the new password, and the
// "this wasn't me" link of a new sign-in mail, which ends every session and the password. Then the docs page renders
// under its Content-Security-Policy without a violation, and browser apps on other origins: one that
// ACCOUNTS_CORS_ORIGINS lists registers and signs in through fetch, one it does not list reads nothing.
// Last, a social sign-in: /account/signed-in?provider=dev through make run's dev OpenID provider (its own
// login form and consent page) and back, with no request leaving loopback. Then passkeys on /account/passkeys
// with Chromium's virtual authenticator: sign in with the password, add a passkey, and in a fresh document sign
// in with the passkey alone, then with the password and the passkey as the second factor.
// Usage: node tests/e2e/browser.mjs <accounts base URL> <MailDev base URL> <listed origin> <unlisted origin>
//          <dev OpenID provider origin>
import { createRequire } from "node:module";
import http from "node:http";
import assert from "node:assert/strict";

const require = createRequire(new URL("../../var/tools/", import.meta.url));
const { chromium } = require("playwright-core");

const [api, maildev, appOrigin, strangerOrigin, devProvider] = process.argv.slice(2);
assert.ok(appOrigin && strangerOrigin && devProvider,
  "usage: browser.mjs <api> <maildev> <listed origin> <unlisted origin> <dev provider origin>");
const email = `browser-${Date.now()}@example.com`;
const password = "first-pass-1234";
const newPassword = "second-pass-5678";

async function post(path, body, headers = {}) {
  const response = await fetch(`${api}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.text() };
}

/** Waits for a mail to `to` whose subject matches, and returns the first link starting with `prefix`. */
async function linkFromMail(subject, prefix, to = email) {
  for (let i = 0; i < 150; i++) {
    const mails = await (await fetch(`${maildev}/api/email`)).json();
    const mail = mails.find((m) => m.to.some((t) => t.address === to) && subject.test(m.subject));
    if (mail) {
      const links = [...mail.html.matchAll(/href="([^"]+)"/g)].map((m) => m[1].replaceAll("&amp;", "&"));
      const link = links.find((l) => l.startsWith(prefix));
      assert.ok(link, `no ${prefix} link in ${mail.subject}`);
      assert.ok(mail.text.includes(link), "the plain-text part carries the same link");
      return link;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no mail matching ${subject} for ${to}`);
}

/** Waits until the page's `#message` reads `expected` as a success, or fails with the error it shows instead. */
async function succeeds(page, expected, what) {
  await page.locator("#message.error").or(page.locator("#message.ok", { hasText: expected }))
    .waitFor({ timeout: 20000 });
  const text = await page.textContent("#message");
  assert.equal(await page.getAttribute("#message", "class"), "ok", `${what}: ${text}`);
  return text;
}

/** A context whose pages may load only from loopback: every other request is aborted and listed in `blocked`. */
async function loopbackOnly(browser) {
  const context = await browser.newContext();
  const blocked = [];
  await context.route("**/*", (route) => {
    const { hostname } = new URL(route.request().url());
    if (["127.0.0.1", "localhost", "[::1]"].includes(hostname)) {
      return route.continue();
    }
    blocked.push(route.request().url());
    return route.abort("blockedbyclient");
  });
  return { context, blocked };
}

/** A browser app's page, served from its own origin (another port of 127.0.0.1). */
function serveApp(origin) {
  const { hostname, port } = new URL(origin);
  const server = http.createServer((_, response) => {
    response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    response.end("<!doctype html><title>a browser app</title><p>app</p>");
  });
  return new Promise((resolve) => server.listen(Number(port), hostname, () => resolve(server)));
}

/** In `page`, registers and signs in through fetch; what the app could read, or where fetch failed. */
function signUpFrom(page, email) {
  return page.evaluate(async ({ api, email, password }) => {
    const json = { "Content-Type": "application/json" };
    const step = async (name, path, init) => {
      try {
        const response = await fetch(`${api}${path}`, init);
        return { name, status: response.status, requestId: response.headers.get("x-request-id"), body: await response.json() };
      } catch (e) {
        return { name, failed: String(e) };
      }
    };
    const body = JSON.stringify({ user: { email, password, confirm_password: password } });
    const registered = await step("register", "/api/users", { method: "POST", headers: json, body });
    const login = await step("login", "/api/users/login", {
      method: "POST", headers: json, body: JSON.stringify({ user: { email, password } }),
    });
    const token = login.body?.user?.token;
    const me = await step("me", "/api/user", { headers: { Authorization: `Token ${token}` } });
    return { registered, login, me };
  }, { api, email, password });
}

const apps = await Promise.all([serveApp(appOrigin), serveApp(strangerOrigin)]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const registered = await post("/api/users", { user: { email, password, confirm_password: password } });
  assert.equal(registered.status, 201, registered.body);

  const page = await browser.newPage();
  const confirm = await linkFromMail(/welcome|confirm/i, `${api}/api/users/confirm?token=`);
  await page.goto(confirm);
  assert.equal(new URL(page.url()).pathname, "/account/email-confirmed");
  assert.match(await page.textContent("#result"), /confirmed/);

  assert.equal((await post("/api/users/password/forgot", { user: { email } })).status, 202);
  const reset = await linkFromMail(/reset/i, `${api}/account/reset-password?token=`);
  await page.goto(reset);
  await page.fill("#password", newPassword);
  await page.fill("#confirm_password", newPassword);
  await page.click("#submit");
  await page.waitForSelector("#message.ok", { timeout: 10000 }).catch(async (e) => {
    throw new Error(`the reset form did not succeed: ${await page.textContent("#message")}`, { cause: e });
  });
  assert.match(await page.textContent("#message"), /changed/);

  const oldLogin = await post("/api/users/login", { user: { email, password } });
  assert.equal(oldLogin.status, 401, oldLogin.body);
  const newLogin = await post("/api/users/login", { user: { email, password: newPassword } });
  assert.equal(newLogin.status, 200, newLogin.body);
  const me = JSON.parse(newLogin.body).user;
  assert.equal(me.verified, true);

  // A sign-in from another browser: its owner gets a "new sign-in" mail whose link takes the account back.
  const firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
  const stranger = await post("/api/users/login", { user: { email, password: newPassword } }, { "User-Agent": firefox });
  assert.equal(stranger.status, 200, stranger.body);
  const strangerToken = JSON.parse(stranger.body).user.token;
  const reject = await linkFromMail(/new sign-in/i, `${api}/account/reject-sign-in?token=`);
  await page.goto(reject);
  await page.click("#submit");
  await page.waitForSelector("#message.ok", { timeout: 10000 }).catch(async (e) => {
    throw new Error(`the reject page did not succeed: ${await page.textContent("#message")}`, { cause: e });
  });
  const after = await fetch(`${api}/api/user`, { headers: { Authorization: `Token ${strangerToken}` } });
  assert.equal(after.status, 401, "the rejected session's token stopped at once");
  // The stranger knows the password and may hold other sessions: every session ends, the password
  // stops working, and the reset mailed with it is the way back in.
  const mine = await fetch(`${api}/api/user`, { headers: { Authorization: `Token ${me.token}` } });
  assert.equal(mine.status, 401, "every session of the account ended");
  const known = await post("/api/users/login", { user: { email, password: newPassword } });
  assert.equal(known.status, 401, "the password the stranger used no longer works");

  // The docs page renders the API under its policy: no inline script, no framing, no violation.
  const docs = await browser.newPage();
  const consoleErrors = [];
  docs.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  docs.on("pageerror", (e) => consoleErrors.push(String(e)));
  await docs.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const docsResponse = await docs.goto(`${api}/docs/`);
  const csp = docsResponse.headers()["content-security-policy"] ?? "";
  assert.match(csp, /frame-ancestors 'none'/, csp);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, csp);
  assert.equal(docsResponse.headers()["referrer-policy"], "no-referrer");
  await docs.waitForSelector(".opblock", { timeout: 20000 });
  const operations = await docs.locator(".opblock").count();
  assert.ok(operations >= 20, `the docs page shows ${operations} operations`);
  await docs.locator(".opblock-summary").first().click();
  await docs.waitForSelector(".opblock-body", { timeout: 10000 });
  const violations = await docs.evaluate(() => window.__violations);
  assert.deepEqual(violations, [], "CSP violations on /docs/");
  assert.deepEqual(consoleErrors.filter((e) => /Content.Security.Policy|Refused/i.test(e)), [], "console: CSP");

  // A browser app on a listed origin registers and signs in through fetch, and reads the answers.
  const app = await browser.newPage();
  await app.goto(`${appOrigin}/`);
  const appEmail = `spa-${Date.now()}@example.com`;
  const listed = await signUpFrom(app, appEmail);
  assert.equal(listed.registered.status, 201, JSON.stringify(listed.registered));
  assert.equal(listed.login.status, 200, JSON.stringify(listed.login));
  assert.ok(listed.login.body.user.token, "the app reads its token");
  assert.ok(listed.login.requestId, "X-Request-Id is exposed to the app");
  assert.equal(listed.me.status, 200, JSON.stringify(listed.me));
  assert.equal(listed.me.body.user.email, appEmail);

  // A page on an unlisted origin: its browser lets it read nothing, not even an error.
  const elsewhere = await browser.newPage();
  await elsewhere.goto(`${strangerOrigin}/`);
  const unlisted = await signUpFrom(elsewhere, `stranger-${Date.now()}@example.com`);
  for (const step of [unlisted.registered, unlisted.login, unlisted.me]) {
    assert.ok(step.failed, `${step.name} from an unlisted origin was readable: ${JSON.stringify(step)}`);
  }
  const theft = await elsewhere.evaluate(async ({ api, email, password }) => {
    try {
      const r = await fetch(`${api}/api/users/login`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user: { email, password } }),
      });
      return `read ${r.status}`;
    } catch (e) {
      return `blocked: ${e}`;
    }
  }, { api, email: appEmail, password });
  assert.match(theft, /^blocked/, "an unlisted origin signed in with the app user's password");

  // Social sign-in as make run prints it: the page starts the flow (PKCE in the browser), the dev
  // provider's login form takes any name and password, its consent page continues, and the page
  // redeems the code that comes back. The provider's pages import a web font it strips: nothing leaves.
  const { context: social, blocked } = await loopbackOnly(browser);
  const login = `social-${Date.now()}`;
  const tab = await social.newPage();
  await tab.goto(`${api}/account/signed-in?provider=dev`);
  await tab.waitForURL((url) => url.origin === devProvider && url.pathname.startsWith("/interaction/"),
    { timeout: 20000 });
  await tab.fill('input[name="login"]', login);
  await tab.fill('input[name="password"]', "any password");
  await tab.getByRole("button", { name: "Sign-in" }).click();
  await tab.waitForSelector('input[name="prompt"][value="consent"]', { state: "attached", timeout: 20000 });
  assert.equal(new URL(tab.url()).origin, devProvider, "the consent page is the provider's");
  await tab.getByRole("button", { name: "Continue" }).click();
  await tab.waitForURL((url) => `${url.origin}${url.pathname}` === `${api}/account/signed-in`, { timeout: 20000 });
  await tab.waitForSelector("#message.ok", { timeout: 20000 }).catch(async (e) => {
    throw new Error(`the social sign-in did not succeed: ${await tab.textContent("#message")}`, { cause: e });
  });
  assert.match(await tab.textContent("#message"), /^Signed in as /);
  assert.equal(await tab.textContent("#user-email"), `${login}@example.test`);
  assert.deepEqual(blocked, [], "requests that left loopback during the social sign-in");
  await social.close();

  // Passkeys (WebAuthn refuses an IP address as the relying party: the public URL is localhost). A virtual
  // authenticator stands in for the platform's: it keeps resident keys and always verifies its user. It belongs
  // to this tab, so "a fresh page" is a new document in the same tab: nothing of the last one's memory is left.
  const passkeyEmail = `passkey-${Date.now()}@example.com`;
  const account = await post("/api/users", { user: { email: passkeyEmail, password, confirm_password: password } });
  assert.equal(account.status, 201, account.body);
  const confirmPasskeyEmail = await linkFromMail(/welcome|confirm/i, `${api}/api/users/confirm?token=`, passkeyEmail);
  const confirmed = await fetch(confirmPasskeyEmail, { headers: { Accept: "application/json" } });
  assert.equal(confirmed.status, 200, "a passkey needs a confirmed address");
  const userId = (await confirmed.json()).user.id;

  const keys = await browser.newPage();
  const pageErrors = [];
  keys.on("pageerror", (e) => pageErrors.push(String(e)));
  await keys.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const cdp = await keys.context().newCDPSession(keys);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
               isUserVerified: true },
  });
  const passkeysPage = `${api}/account/passkeys`;
  await keys.goto(passkeysPage);
  await keys.fill("#email", passkeyEmail);
  await keys.fill("#password", password);
  await keys.click("#password-sign-in button");
  await succeeds(keys, "Signed in as", "the password sign-in");
  await keys.fill("#passkey-name", "Smoke test");
  await keys.click("#add-passkey button");
  assert.equal(await succeeds(keys, "added", "adding a passkey"), 'Passkey "Smoke test" added.');
  assert.equal(await keys.locator("#recovery-codes li").count(), 10, "the first passkey shows the recovery codes");
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.equal(credentials.length, 1, JSON.stringify(credentials));
  assert.equal(credentials[0].isResidentCredential, true, "a discoverable credential (a passkey)");
  assert.equal(credentials[0].rpId, "localhost");
  assert.equal(Buffer.from(credentials[0].userHandle, "base64").toString("hex"), userId.replaceAll("-", ""),
    "the user handle is the account's id");

  await keys.goto(passkeysPage);
  await keys.click("#passkey-sign-in");
  assert.equal(await succeeds(keys, "Signed in as", "the passkey sign-in"), `Signed in as ${passkeyEmail}.`);

  // The passkey is now the account's second factor: the password alone no longer signs in.
  await keys.goto(passkeysPage);
  await keys.fill("#email", passkeyEmail);
  await keys.fill("#password", password);
  await keys.click("#password-sign-in button");
  assert.equal(await succeeds(keys, "Signed in as", "the password and passkey sign-in"), `Signed in as ${passkeyEmail}.`);
  const used = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.equal(used.credentials.length, 1, "signing in made no new credential");
  assert.ok(used.credentials[0].signCount > credentials[0].signCount, "the sign counter moved with each use");
  assert.deepEqual(await keys.evaluate(() => window.__violations), [], "CSP violations on /account/passkeys");
  assert.deepEqual(pageErrors, [], "script errors on /account/passkeys");
  await keys.close();

  console.log("browser e2e: confirm page, reset form, new login, the new sign-in link, /docs under its CSP, " +
    "CORS (listed origin signs up and in; unlisted origin reads nothing), a social sign-in through the dev " +
    "provider (loopback only) and passkeys (add one, sign in with it alone and as a second factor) all passed");
} finally {
  await browser.close();
  await Promise.all(apps.map((server) => new Promise((resolve) => server.close(resolve))));
}
