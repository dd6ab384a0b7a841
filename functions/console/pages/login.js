import { h, post, session, field, announce, errorText } from "../lib.js";

export function renderLogin(main, done) {
  const user = h("input", { name: "username", autocomplete: "username", required: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p.form-error", { role: "alert" });
  const form = h("form.card.login", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const res = await post("/auth/login", { username: user.value, password: pass.value });
        session.token = res.access_token;
        announce(`Signed in as ${user.value}.`);
        done();
      } catch (err) {
        error.textContent = errorText(err);
      } finally {
        button.disabled = false;
      }
    },
  },
  h("h1", "Sign in to Lifeboat"),
  field("User name", user),
  field("Password", pass),
  error,
  h("button", { type: "submit" }, "Sign in"));
  main.append(form);
  user.focus();
}
