// Loaded from a file, not inline: the pages' Content-Security-Policy allows no inline script.
document.getElementById("resend").addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = document.getElementById("email").value;
  const response = await fetch(new URL("../api/users/confirm/resend", window.location.href), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: { email } }),
  });
  const message = document.getElementById("message");
  message.textContent = response.status === 202
    ? "If an unconfirmed account uses that address, a new link is on its way."
    : "Too many requests. Please try again later.";
});
