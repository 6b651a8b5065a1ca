// Passkeys in the browser: sign in with a password (finishing with a passkey when it is the account's
// second factor), add a passkey, and sign in with a passkey alone. The browser's own WebAuthn JSON
// (parse*OptionsFromJSON, toJSON) carries the bytes both ways. The token stays in this page's memory.
const api = (path) => new URL(path, document.getElementById("config").dataset.apiBase);
const message = document.getElementById("message");
let token = null;

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Token ${token}`;
  const response = await fetch(api(path), { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(Object.values(answer.errors || {}).flat().join(" ") || `HTTP ${response.status}`);
  return answer;
}

const create = async (publicKey) =>
  (await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(publicKey) })).toJSON();
const get = async (publicKey) =>
  (await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey) })).toJSON();

function show(text, kind = "ok") {
  message.className = kind;
  message.textContent = text;
}

function signedIn(user) {
  token = user.token;
  document.getElementById("add-passkey").hidden = false;
  show(`Signed in as ${user.email}.`);
}

async function passwordSignIn() {
  const user = { email: document.getElementById("email").value, password: document.getElementById("password").value };
  token = null;
  let answer = await post("api/users/login", { user });
  if (answer.mfa) {
    if (!answer.mfa.passkey_options) throw new Error("This account's second factor is a code: sign in with it elsewhere.");
    const credential = await get(answer.mfa.passkey_options.publicKey);
    answer = await post("api/users/login/mfa", { challenge: answer.mfa.challenge, credential });
  }
  signedIn(answer.user);
}

async function addPasskey() {
  const { ceremony, publicKey } = await post("api/user/passkeys/options", {});
  const name = document.getElementById("passkey-name").value.trim() || undefined;
  const added = await post("api/user/passkeys", { ceremony, credential: await create(publicKey), name });
  if (added.token) token = added.token; // the first passkey turned the second factor on: an aal2 token
  if (added.recovery_codes) {
    document.getElementById("recovery-codes").replaceChildren(...added.recovery_codes.map((code) =>
      Object.assign(document.createElement("li"), { textContent: code })));
    document.getElementById("recovery").hidden = false;
  }
  show(`Passkey "${added.passkey.name}" added.`);
}

async function passkeySignIn() {
  token = null;
  const { ceremony, publicKey } = await post("api/users/login/passkey/options", {});
  signedIn((await post("api/users/login/passkey", { ceremony, credential: await get(publicKey) })).user);
}

function on(id, event, action) {
  document.getElementById(id).addEventListener(event, (e) => {
    e.preventDefault();
    show("", "");
    action().catch((error) => show(error.message, "error"));
  });
}
on("password-sign-in", "submit", passwordSignIn);
on("add-passkey", "submit", addPasskey);
on("passkey-sign-in", "click", passkeySignIn);
