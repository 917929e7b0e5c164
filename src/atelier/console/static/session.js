// The API key and user id live in sessionStorage only: gone when the tab closes, never
// in a URL, a cookie or a log.
const KEY = "atelier.key";
const USER = "atelier.user";

export function credentials() {
  const key = sessionStorage.getItem(KEY);
  const user = sessionStorage.getItem(USER);
  return key && user ? { key, user } : null;
}

export function signIn(key, user) {
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(USER, user);
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
