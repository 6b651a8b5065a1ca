// Loaded from a file, not inline: the pages' Content-Security-Policy allows no inline script.
document.getElementById("reset").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {
    token: document.getElementById("token").value,
    password: document.getElementById("password").value,
    confirm_password: document.getElementById("confirm_password").value,
  };
  const response = await fetch(new URL("../api/users/password/reset", window.location.href), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const message = document.getElementById("message");
  if (response.status === 204) {
    message.className = "ok";
    message.textContent = "Your password has been changed. You can now sign in.";
    document.getElementById("reset").remove();
    return;
  }
  let errors = {};
  try { errors = (await response.json()).errors || {}; } catch (_) {}
  message.className = "error";
  message.textContent = Object.values(errors).flat().join(" ") || "Something went wrong.";
});
