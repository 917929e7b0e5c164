// The API key (or an end user's token) and user id live in sessionStorage only: gone
// when the tab closes, never in a URL, a cookie or a log. A link a product hands its user
// carries the token in the fragment (#token=...), which no request sends: it is moved
// here and wiped from the address bar at once.
const KEY = "atelier.key";
const USER = "atelier.user";

// An end user's token (Atelier's own, or a JWT of the product's identity provider) *is*
// its user: no user id is sent beside it, and the tenant's administration is not its.
export function isToken(key) {
  return key.startsWith("atu_") || key.split(".").length === 3;
}

function subjectOf(token) {
  try {
    const payload = token.replace(/^atu_/, "").split(".")[1];
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json).sub || null;
  } catch {
    return null;
  }
}

export function credentials() {
  const key = sessionStorage.getItem(KEY);
  const user = sessionStorage.getItem(USER);
  return key && user ? { key, user, token: isToken(key) } : null;
}

export function signIn(key, user) {
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(USER, isToken(key) ? subjectOf(key) || "you" : user);
}

// A support link: /console/#token=<token>. Taken once, then gone from the URL and history.
export function takeTokenFromLink() {
  const found = /^#token=([^&]+)/.exec(location.hash);
  if (!found) return false;
  history.replaceState(null, "", `${location.pathname}#/conversations`);
  signOut();
  signIn(decodeURIComponent(found[1]), "");
  return true;
}

export function signOut() {
  for (const name of Object.keys(sessionStorage)) {
    if (name.startsWith("atelier.")) sessionStorage.removeItem(name);
  }
}

// What a run's stream showed so far, kept for a reload in the middle of it.
export function liveState(conversation) {
  const raw = sessionStorage.getItem(`atelier.live.${conversation}`);
  return raw ? JSON.parse(raw) : null;
}

export function saveLiveState(conversation, state) {
  sessionStorage.setItem(`atelier.live.${conversation}`, JSON.stringify(state));
}

export function forgetLiveState(conversation) {
  sessionStorage.removeItem(`atelier.live.${conversation}`);
}
