/**
 * An emulated Microsoft Entra ID token endpoint (client-credentials flow, as MSAL Node drives it for
 * @azure/identity's ClientSecretCredential / EnvironmentCredential) and the check of the bearer
 * token on every ARM and Key Vault request. Tokens are HS256 JWTs signed with a key that lives only
 * in the emulator's memory.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { type EmulatorReply, type EmulatorRequest, header, json } from "./http.ts";

export interface ServicePrincipal {
  clientId: string;
  clientSecret: string;
}

const TOKEN_LIFETIME_SECONDS = 3600;

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

export class EntraEmulator {
  readonly tenantId: string;
  private readonly signingKey = randomBytes(32);
  private readonly principals = new Map<string, ServicePrincipal>();
  /** Access tokens issued, counted for tests. */
  issued = 0;

  constructor(tenantId: string) {
    this.tenantId = tenantId;
  }

  addServicePrincipal(principal: ServicePrincipal): void {
    this.principals.set(principal.clientId, principal);
  }

  /** Answers the Entra endpoints, or returns undefined when the request is not for them. */
  handle(request: EmulatorRequest): EmulatorReply | undefined {
    const parts = request.path.split("/").filter(Boolean);
    // Instance discovery, as MSAL asks it of the authority host when discovery is on.
    if (parts.length === 3 && parts[0] === "common" && parts[1] === "discovery" && parts[2] === "instance") {
      const host = new URL(request.origin).host;
      return json(200, {
        tenant_discovery_endpoint: `${request.origin}/${this.tenantId}/v2.0/.well-known/openid-configuration`,
        "api-version": "1.1",
        metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
      });
    }
    const tenant = parts[0];
    if (tenant === undefined) return undefined;
    const rest = parts.slice(1).join("/");
    const knownTenant = tenant === this.tenantId || tenant === "organizations" || tenant === "common";
    if (rest === "v2.0/.well-known/openid-configuration" && request.method === "GET") {
      if (!knownTenant) return this.tenantNotFound(tenant);
      const base = `${request.origin}/${this.tenantId}`;
      return json(200, {
        token_endpoint: `${base}/oauth2/v2.0/token`,
        token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        jwks_uri: `${base}/discovery/v2.0/keys`,
        response_modes_supported: ["query", "fragment", "form_post"],
        subject_types_supported: ["pairwise"],
        id_token_signing_alg_values_supported: ["RS256"],
        response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
        scopes_supported: ["openid", "profile", "email", "offline_access"],
        issuer: `${base}/v2.0`,
        request_uri_parameter_supported: false,
        userinfo_endpoint: `${base}/openid/userinfo`,
        authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
        device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
        http_logout_supported: true,
        frontchannel_logout_supported: true,
        end_session_endpoint: `${base}/oauth2/v2.0/logout`,
        claims_supported: ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
        kerberos_endpoint: `${base}/kerberos`,
        tenant_region_scope: "EU",
        cloud_instance_name: "microsoftonline.com",
        cloud_graph_host_name: "graph.windows.net",
        msgraph_host: "graph.microsoft.com",
        rbac_url: "https://pas.windows.net",
      });
    }
    if (rest === "discovery/v2.0/keys" && request.method === "GET") return json(200, { keys: [] });
    if (rest === "oauth2/v2.0/token" && request.method === "POST") {
      if (tenant !== this.tenantId) return this.tenantNotFound(tenant);
      return this.issueToken(request);
    }
    return undefined;
  }

  private tenantNotFound(tenant: string): EmulatorReply {
    return json(400, {
      error: "invalid_tenant",
      error_description: `AADSTS90002: Tenant '${tenant}' not found. Check the tenant id (AZURE_TENANT_ID).`,
      error_codes: [90002],
    });
  }

  private issueToken(request: EmulatorRequest): EmulatorReply {
    const form = new URLSearchParams(request.body.toString("utf8"));
    let clientId = form.get("client_id") ?? "";
    let clientSecret = form.get("client_secret") ?? "";
    const basic = header(request, "authorization");
    if (basic?.startsWith("Basic ")) {
      const [id, secret] = Buffer.from(basic.slice(6), "base64").toString("utf8").split(":");
      clientId = decodeURIComponent(id ?? "");
      clientSecret = decodeURIComponent(secret ?? "");
    }
    if (form.get("grant_type") !== "client_credentials") {
      return json(400, {
        error: "unsupported_grant_type",
        error_description: "AADSTS70003: The emulator supports only the client_credentials grant.",
      });
    }
    const principal = this.principals.get(clientId);
    if (!principal) {
      return json(400, {
        error: "unauthorized_client",
        error_description: `AADSTS700016: Application with identifier '${clientId}' was not found in the directory.`,
        error_codes: [700016],
      });
    }
    const given = Buffer.from(clientSecret);
    const expected = Buffer.from(principal.clientSecret);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return json(401, {
        error: "invalid_client",
        error_description: "AADSTS7000215: Invalid client secret provided.",
        error_codes: [7000215],
      });
    }
    const scope = (form.get("scope") ?? "").split(" ").find((s) => s.endsWith("/.default")) ?? "";
    const audience = scope.replace(/\/\.default$/, "");
    const now = Math.floor(Date.now() / 1000);
    const token = this.sign({
      aud: audience,
      iss: `${request.origin}/${this.tenantId}/v2.0`,
      iat: now,
      nbf: now,
      exp: now + TOKEN_LIFETIME_SECONDS,
      tid: this.tenantId,
      appid: clientId,
      azp: clientId,
      oid: clientId,
      sub: clientId,
      ver: "2.0",
    });
    this.issued++;
    return json(200, {
      token_type: "Bearer",
      expires_in: TOKEN_LIFETIME_SECONDS,
      ext_expires_in: TOKEN_LIFETIME_SECONDS,
      access_token: token,
    });
  }

  private sign(claims: Record<string, unknown>): string {
    const head = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
    const body = base64url(JSON.stringify(claims));
    const signature = createHmac("sha256", this.signingKey).update(`${head}.${body}`).digest("base64url");
    return `${head}.${body}.${signature}`;
  }

  /** The claims of a valid bearer token on the request, or a reason why there is none. */
  verify(request: EmulatorRequest): { claims: Record<string, any> } | { reason: string } {
    const value = header(request, "authorization");
    if (!value?.startsWith("Bearer ")) return { reason: "The request has no bearer token." };
    const [head, body, signature] = value.slice(7).split(".");
    if (!head || !body || !signature) return { reason: "The access token is malformed." };
    const expected = createHmac("sha256", this.signingKey).update(`${head}.${body}`).digest();
    const given = Buffer.from(signature, "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return { reason: "The access token signature is invalid." };
    }
    const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
    if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) return { reason: "The access token has expired." };
    if (claims.tid !== this.tenantId) return { reason: "The access token is from a different tenant." };
    return { claims };
  }
}
