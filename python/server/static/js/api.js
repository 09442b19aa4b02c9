// The console's session and its calls to the server.
//
// A session is an access token, from /oauth/2.0/token for the API key and secret typed into the
// sign-in form (the secret is sent that once and never kept), or under --auth off simply the
// appid chosen. Both live in sessionStorage: they end with the tab. Every call names them as the
// v3 API expects, ?access_token= or ?appid=, never in a cookie.

const TOKEN = "facecore.token";
const APPID = "facecore.appid";
const KEY = "facecore.api_key";
export const SIGNED_OUT = "facecore:signed-out";

/** An answer whose error_code is not 0: `code`, the spec's `msg`, the server's `detail`. */
export class ApiError extends Error {
  constructor(code, text, detail) {
    super(detail ? `${text} (${code}): ${detail}` : `${text} (${code})`);
    this.code = code;
    this.text = text;
    this.detail = detail;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  get appid() {
    return sessionStorage.getItem(APPID);
  },
  get apiKey() {
    return sessionStorage.getItem(KEY);
  },
  choose(appid) {
    if (appid) sessionStorage.setItem(APPID, appid);
    else sessionStorage.removeItem(APPID);
  },
  signOut() {
    for (const name of [TOKEN, APPID, KEY]) sessionStorage.removeItem(name);
  },
};

/** The query string of a call: its parameters and the session's credential or appid. */
export function query(params = {}, withAppid = true) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, v);
  if (session.token) q.set("access_token", session.token);
  else if (withAppid && session.appid) q.set("appid", session.appid);
  return q.toString();
}

async function envelope(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(response.status, `HTTP ${response.status}`, "the answer is not JSON");
  }
  if (body.error_code === 0) return body.result;
  if ((body.error_code === 110 || body.error_code === 111) && session.token) {
    session.signOut(); // the token is gone: the page asks for the key again
    window.dispatchEvent(new CustomEvent(SIGNED_OUT, { detail: body.error_msg }));
  }
  throw new ApiError(body.error_code, body.error_msg, body.error_detail);
}

function json(body) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

/** A v3 route, as any client calls it: POST /face-api/v3/{route}, the result or an ApiError. */
export async function v3(route, body) {
  return envelope(await fetch(`/face-api/v3/${route}?${query()}`, json(body)));
}

/** A console endpoint: GET /console/api/{path}. */
export async function get(path, params = {}, withAppid = true) {
  return envelope(await fetch(`/console/api/${path}?${query(params, withAppid)}`));
}

/** A console endpoint: POST /console/api/{path} with a JSON body. */
export async function post(path, body, params = {}, withAppid = true) {
  return envelope(await fetch(`/console/api/${path}?${query(params, withAppid)}`, json(body)));
}

/** The capabilities (open, in the envelope) and /health (open, plain JSON). */
export async function capabilities() {
  return envelope(await fetch("/face-api/v3/capabilities"));
}

export async function health() {
  const r = await fetch("/health");
  if (!r.ok) throw new ApiError(r.status, `HTTP ${r.status}`, "/health did not answer");
  return r.json();
}

/** The URL of a face's registration image (for an <img>: the credential is in the query). */
export function imageUrl(groupId, faceToken) {
  return `/console/api/face/image?${query({ group_id: groupId, face_token: faceToken })}`;
}

/** Trade an API key and its secret for an access token; the secret is not kept. */
export async function signIn(apiKey, secret) {
  const form = new URLSearchParams({
    grant_type: "client_credentials",
    client_id: apiKey,
    client_secret: secret,
  });
  const r = await fetch("/oauth/2.0/token", { method: "POST", body: form });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok || !answer.access_token) {
    throw new ApiError(r.status, answer.error_description || "Sign-in failed", answer.error);
  }
  session.signOut();
  sessionStorage.setItem(TOKEN, answer.access_token);
  sessionStorage.setItem(KEY, apiKey);
  const { appid_list: appids } = await get("appids", {}, false);
  session.choose(appids[0]);
}
