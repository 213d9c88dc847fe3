// Small behaviours shared by every /app/ page: agency switcher, confirmations, copy buttons, toasts.

export function toast(text) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toast._t);
  toast._t = setTimeout(() => el.classList.remove("show"), 2600);
}

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

document.querySelectorAll("form[data-autosubmit] select").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});

document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

document.querySelectorAll("[data-copy]").forEach((button) => {
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    const text = source ? (source.value ?? source.textContent).trim() : "";
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
      toast("Copied to the clipboard");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(source);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      toast("Press Ctrl+C to copy");
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
});

// Below 1024 px (app.css) the top bar's nav, agency switcher and user menu fold behind the Menu button: a
// disclosure (aria-expanded), closed by Escape (focus back on the button), a tap outside, or a wide screen.
const menuToggle = document.getElementById("menu-toggle");
const topbar = menuToggle && menuToggle.closest(".topbar");
if (topbar) {
  const setMenuOpen = (open) => {
    menuToggle.setAttribute("aria-expanded", String(open));
    topbar.classList.toggle("menu-open", open);
  };
  const menuOpen = () => menuToggle.getAttribute("aria-expanded") === "true";
  menuToggle.hidden = false;
  topbar.classList.add("has-menu-toggle");
  menuToggle.addEventListener("click", () => setMenuOpen(!menuOpen()));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menuOpen()) {
      setMenuOpen(false);
      menuToggle.focus();
    }
  });
  document.addEventListener("click", (event) => {
    if (menuOpen() && !topbar.contains(event.target)) setMenuOpen(false);
  });
  window.matchMedia("(min-width: 1024px)").addEventListener("change", (event) => {
    if (event.matches) setMenuOpen(false);
  });
}
