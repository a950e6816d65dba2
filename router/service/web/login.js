import { api, ApiError, session, T } from './common.js';

const form = document.getElementById('login');
const errorBox = document.getElementById('error');

export function home(login) {
  return login.role === 'agent' ? '/web/workbench.html' : '/web/dashboard.html';
}

if (session.token && session.login) location.replace(home(session.login));

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  errorBox.hidden = true;
  const main = form.main.value.trim();
  const sub = form.sub.value.trim();
  const account = sub ? `${main}:${sub}` : main;
  const button = document.getElementById('submit');
  button.disabled = true;
  try {
    const login = await api('POST', '/v1/auth/login', { account, password: form.password.value });
    session.save(login);
    location.replace(home(login));
  } catch (err) {
    errorBox.textContent = err instanceof ApiError && err.status === 401 ? T('ui.wrong_account_or_password') : T('ui.login_failed', err.message);
    errorBox.hidden = false;
  } finally {
    button.disabled = false;
  }
});

// Ready: until now a click would have submitted the form natively (the password in a request
// the page never meant to send); the button stays disabled until this listener is in place.
document.getElementById('submit').disabled = false;
