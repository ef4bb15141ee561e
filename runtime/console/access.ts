/**
 * Who may use the console, and proof that a form came from the console's own page.
 *
 * Locally (`--auth token`, the default) the console prints a URL holding a random 256-bit token; the
 * first request bearing it gets an HttpOnly, SameSite=Strict session cookie and is redirected to the
 * same page without the token (so it leaves the address bar and the history); after that the token
 * lets in only the browser holding that session. Every other request needs
 * that cookie. Deployed (`--auth entra`), Container Apps' built-in authentication stands in front of
 * the app and passes the signed-in user's name in X-MS-CLIENT-PRINCIPAL-NAME. Its middleware
 * "injects identity information into HTTP request headers", and "external requests aren't allowed
 * to set these headers, so they're present only if set by Container Apps"; the feature "should be
 * used with HTTPS only", so the session cookie is Secure there (MicrosoftDocs/azure-docs,
 * articles/container-apps/authentication.md: "Feature architecture", "Considerations for using
 * built-in authentication", "Access user claims in application code"). The console trusts the
 * header only when started with --auth entra, which it refuses on loopback.
 *
 * Each session gets its own CSRF token, put in every form and checked on every POST (a page of
 * another site cannot read it; SameSite=Strict keeps the cookie off its cross-site POSTs too).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

export const COOKIE = "bulwark_console";
export const PRINCIPAL_HEADER = "x-ms-client-principal-name";
/** Sessions kept at most; the oldest go first (each visit with the token makes one). */
const MAX_SESSIONS = 1000;

export type AuthMode = "token" | "entra";

interface Session {
  csrf: string;
  who: string;
}

export type Access =
  | { kind: "session"; sessionId: string; session: Session }
  /** The URL's token was right: set this cookie and redirect to `location`. */
  | { kind: "enter"; cookie: string; location: string }
  | { kind: "refused"; why: string };

function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function cookieValue(request: IncomingMessage, name: string): string | undefined {
  for (const part of (request.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export class AccessControl {
  readonly mode: AuthMode;
  /** The URL token (token mode). */
  readonly token: string;
  private readonly sessions = new Map<string, Session>();
  /** Whether a browser has entered with the URL token (token mode). */
  private tokenSpent = false;
  private readonly secure: boolean;

  constructor(mode: AuthMode, options: { secureCookie?: boolean } = {}) {
    this.mode = mode;
    this.token = randomBytes(32).toString("base64url");
    this.secure = options.secureCookie ?? mode === "entra";
  }

  /** Judges a request: a session, an entry with the token, or refused with why. */
  check(request: IncomingMessage, url: URL): Access {
    if (this.mode === "entra") return this.checkEntra(request);
    const sessionId = cookieValue(request, COOKIE);
    const session = sessionId ? this.sessions.get(sessionId) : undefined;
    const offered = url.searchParams.get("token");
    if (offered !== null) {
      if (!sameSecret(offered, this.token)) return { kind: "refused", why: "the token in the address is not this console's" };
      // One browser signs in with the token, once: the printed URL read later (terminal scrollback,
      // a browser's command line in ps, history) lets no one else in. That browser may open it again.
      if (this.tokenSpent && !session) return { kind: "refused", why: "the token in the address was used already (it signs in one browser, once)" };
      this.tokenSpent = true;
      url.searchParams.delete("token");
      // A path that starts with // after dot segments are resolved (/.//evil.example) would be read
      // by the browser as another host: the redirect keeps one leading slash, so it stays here.
      const location = `/${url.pathname.replace(/^\/+/, "")}${url.search}`;
      if (session && sessionId) return { kind: "enter", cookie: this.cookieFor(sessionId), location };
      return { kind: "enter", cookie: this.cookieFor(this.newSession("local user")), location };
    }
    if (sessionId && session) return { kind: "session", sessionId, session };
    return { kind: "refused", why: sessionId ? "the session is not known (the console restarted?)" : "no session" };
  }

  private checkEntra(request: IncomingMessage): Access {
    const who = request.headers[PRINCIPAL_HEADER];
    if (typeof who !== "string" || who === "") return { kind: "refused", why: "no signed-in user: Container Apps authentication did not pass one" };
    const sessionId = cookieValue(request, COOKIE);
    const session = sessionId ? this.sessions.get(sessionId) : undefined;
    // A session belongs to one user: another user's browser does not inherit it.
    if (sessionId && session && session.who === who) return { kind: "session", sessionId, session };
    const fresh = this.newSession(who);
    return { kind: "session", sessionId: fresh, session: this.sessions.get(fresh)! };
  }

  /** The Set-Cookie a new entra session needs (undefined when the request carried it already). */
  cookieToSet(request: IncomingMessage, sessionId: string): string | undefined {
    return cookieValue(request, COOKIE) === sessionId ? undefined : this.cookieFor(sessionId);
  }

  csrfValid(session: Session, offered: string | undefined): boolean {
    return typeof offered === "string" && sameSecret(offered, session.csrf);
  }

  private newSession(who: string): string {
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    const id = randomBytes(32).toString("base64url");
    this.sessions.set(id, { csrf: randomBytes(32).toString("base64url"), who });
    return id;
  }

  private cookieFor(sessionId: string): string {
    return `${COOKIE}=${sessionId}; Path=/; HttpOnly; SameSite=Strict${this.secure ? "; Secure" : ""}`;
  }
}
