// The button of a mailed "this wasn't me" link: posts the link's token to the API route the page names.
document.getElementById("action").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch(new URL(document.getElementById("endpoint").value, window.location.href), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  });
  const message = document.getElementById("message");
  if (response.status === 204) {
    message.className = "ok";
    message.textContent = document.getElementById("done").value;
    document.getElementById("action").remove();
    return;
  }
  let errors = {};
  try { errors = (await response.json()).errors || {}; } catch (_) {}
  message.className = "error";
  message.textContent = Object.values(errors).flat().join(" ") || "Something went wrong.";
});
