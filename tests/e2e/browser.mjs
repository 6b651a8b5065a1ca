// Headless Chromium against the running stack: the confirm link and the reset link from real mail
// captured by MailDev, the pages they open, the reset form, a login with the new password, and the
// "this wasn't me" link of a new sign-in mail, which ends that session.
// Usage: node tests/e2e/browser.mjs <accounts base URL> <MailDev base URL>
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(new URL("../../var/tools/", import.meta.url));
const { chromium } = require("playwright-core");

const [api, maildev] = process.argv.slice(2);
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

/** Waits for a mail to `email` whose subject matches, and returns the first link starting with `prefix`. */
async function linkFromMail(subject, prefix) {
  for (let i = 0; i < 150; i++) {
    const mails = await (await fetch(`${maildev}/api/email`)).json();
    const mail = mails.find((m) => m.to.some((t) => t.address === email) && subject.test(m.subject));
    if (mail) {
      const links = [...mail.html.matchAll(/href="([^"]+)"/g)].map((m) => m[1].replaceAll("&amp;", "&"));
      const link = links.find((l) => l.startsWith(prefix));
      assert.ok(link, `no ${prefix} link in ${mail.subject}`);
      assert.ok(mail.text.includes(link), "the plain-text part carries the same link");
      return link;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no mail matching ${subject} for ${email}`);
}

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
  console.log("browser e2e: confirm page, reset form, new login and the new sign-in link all passed");
} finally {
  await browser.close();
}
