// Upstream OAuth 2.0 authorization server test peer (oidc-provider 9.x),
// the kind of AS a SaaS or internal service runs in front of its API.
//
//   UP_PORT=0 UP_CLIENTS='[...]' UP_TRUSTED='[...]' UP_ACCESS_TTL=60 node tests/peers/oidc/upstream.mjs
//
// Grants: authorization_code (PKCE S256 required, automatic login, always a
// refresh token), refresh_token (always rotated; replaying a used refresh
// token revokes the whole grant), urn:ietf:params:oauth:grant-type:jwt-bearer
// redeeming an ID-JAG (Identity Assertion JWT Authorization Grant) signed by a
// trusted issuer, and urn:ietf:params:oauth:grant-type:token-exchange
// (RFC 8693) for a JWT or ID token signed by a trusted issuer. Also RFC 7009
// revocation, RFC 7662 introspection and RFC 8414 metadata.
//
// stdout carries exactly one line, the ready line:
//   {"ready":true,"issuer":"http://127.0.0.1:<port>"}
// Everything else goes to stderr. Control endpoints (/_test/...) and fault
// injection are described in README.md ("Upstream AS"). The plumbing shared
// with provider.mjs (console routing, env parsing, the in-memory adapter,
// automatic logins, the outer server) is in peer-common.mjs.

import * as crypto from 'node:crypto';

import {
  autoLogin, createMemoryAdapter, invalidGrantError, newCookieKeys, peerTools, readJson, renderJsonError,
  routeConsoleToStderr, servePeer, testCookies,
} from './peer-common.mjs';
import {
  Faults, Stats, applyFault, instrument, sendJson,
} from './upstream-faults.mjs';

// stdout is reserved for the ready line: route the console to stderr BEFORE
// oidc-provider is loaded (hence the dynamic import below).
routeConsoleToStderr();

const { default: Provider, interactionPolicy, errors } = await import('oidc-provider');
const {
  createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify,
} = await import('jose');

const { log, fail, parseJsonEnv, parsePort } = peerTools('[upstream-as]');

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
const TT_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const TT_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const ID_JAG_TYP = 'oauth-id-jag+jwt';
const ASSERTION_ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA', 'Ed25519'];
const IAT_SKEW = 60; // seconds an assertion's iat may lie in the future

// ---------------------------------------------------------------- config ---

const port = parsePort('UP_PORT');

const accessTtl = Number(process.env.UP_ACCESS_TTL || '60');
if (!Number.isInteger(accessTtl) || accessTtl < 1) fail(`UP_ACCESS_TTL must be a positive integer, got ${process.env.UP_ACCESS_TTL}`);

const extraScopes = (process.env.UP_SCOPES || 'read write admin').split(' ').filter(Boolean);
const knownScopes = new Set(['openid', 'offline_access', ...extraScopes]);

const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
const GRANT_TYPES = ['authorization_code', 'refresh_token', JWT_BEARER, TOKEN_EXCHANGE];

const clientsInput = parseJsonEnv('UP_CLIENTS', [
  { client_id: 'test-client', client_secret: 'test-secret', redirect_uris: ['http://127.0.0.1:9/cb'] },
]);
if (!Array.isArray(clientsInput)) fail('UP_CLIENTS must be a JSON array');
const clients = clientsInput.map((c, i) => {
  if (!c || typeof c.client_id !== 'string' || !Array.isArray(c.redirect_uris)) {
    fail(`UP_CLIENTS[${i}] needs client_id and redirect_uris`);
  }
  const method = c.token_endpoint_auth_method ?? (c.jwks_uri && !c.client_secret ? 'private_key_jwt' : 'client_secret_basic');
  if (!AUTH_METHODS.includes(method)) fail(`UP_CLIENTS[${i}]: token_endpoint_auth_method must be one of ${AUTH_METHODS.join(', ')}`);
  if (method === 'private_key_jwt' ? typeof c.jwks_uri !== 'string' : typeof c.client_secret !== 'string') {
    fail(`UP_CLIENTS[${i}]: ${method} needs ${method === 'private_key_jwt' ? 'jwks_uri' : 'client_secret'}`);
  }
  return {
    grant_types: GRANT_TYPES,
    response_types: ['code'],
    ...c,
    // oidc-provider accepts client_secret_post as well for a client
    // registered with client_secret_basic (and vice versa).
    token_endpoint_auth_method: method,
  };
});

const trustedInput = parseJsonEnv('UP_TRUSTED', []);
if (!Array.isArray(trustedInput)) fail('UP_TRUSTED must be a JSON array');
const trusted = new Map(); // issuer -> remote JWKS
for (const [i, t] of trustedInput.entries()) {
  let url;
  try {
    url = new URL(t?.jwks_uri);
  } catch {
    fail(`UP_TRUSTED[${i}] needs issuer and a jwks_uri URL`);
  }
  if (typeof t.issuer !== 'string' || !t.issuer) fail(`UP_TRUSTED[${i}] needs issuer`);
  // Re-fetched on an unknown kid (at most once a second) and when older than a second.
  trusted.set(t.issuer, createRemoteJWKSet(url, { cooldownDuration: 1000, cacheMaxAge: 1000 }));
}

// ------------------------------------------------------------ test state ---

// Logins for login_hint, else the POST /_test/next-login account (sticky);
// any sub is an account.
const logins = autoLogin({ interactionPolicy, errors, sendJson, log });

const faults = new Faults();
const stats = new Stats();

// Assertion jti values already redeemed: `${iss} ${jti}` -> exp (ms).
const seenJti = new Map();
function rememberJti(key, expSeconds) {
  const now = Date.now();
  if (seenJti.size > 1000) {
    for (const [k, exp] of seenJti) if (exp < now) seenJti.delete(k);
  }
  seenJti.set(key, Math.max(expSeconds * 1000, now) + IAT_SKEW * 1000);
}

// Drop expired jti entries now and then.
setInterval(() => {
  const now = Date.now();
  for (const [key, exp] of seenJti) if (exp < now) seenJti.delete(key);
}, 60_000).unref();

// --------------------------------------------------------------- adapter ---
// In-memory store with a grantId index so a grant's whole token family can be
// revoked at once (refresh-token reuse detection and RFC 7009 revocation).
// revokeByGrantId drops only the tokens of the model it is called on.

const MemoryAdapter = createMemoryAdapter({ perModelRevocation: true });

// ------------------------------------------------------ assertion grants ---

const invalidGrant = (why) => invalidGrantError(errors, why);

function joseReason(err) {
  switch (err?.code) {
    case 'ERR_JWT_EXPIRED': return 'assertion is expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': return `assertion claim check failed: ${err.message}`;
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'assertion signature verification failed';
    case 'ERR_JWKS_NO_MATCHING_KEY': return 'no key in the issuer JWKS matches the assertion';
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'assertion alg is not allowed';
    default: return `assertion rejected: ${err?.message ?? err}`;
  }
}

// Verifies a JWT signed by a trusted issuer (an ID-JAG or a token-exchange
// subject token) and returns its claims. Every failure is invalid_grant.
async function verifyAssertion(jwt, { typ, clientId }) {
  let header;
  let unverified;
  try {
    header = decodeProtectedHeader(jwt);
    unverified = decodeJwt(jwt);
  } catch {
    throw invalidGrant('assertion is not a JWT');
  }
  if (typ === ID_JAG_TYP) {
    if (header.typ !== ID_JAG_TYP) throw invalidGrant(`assertion typ must be ${ID_JAG_TYP}, got ${header.typ ?? 'none'}`);
  } else if (header.typ !== undefined && header.typ !== 'JWT') {
    throw invalidGrant(`subject token typ must be JWT or absent, got ${header.typ}`);
  }
  const keys = trusted.get(unverified.iss);
  if (!keys) throw invalidGrant(`issuer ${unverified.iss ?? '(none)'} is not trusted`);

  let claims;
  try {
    ({ payload: claims } = await jwtVerify(jwt, keys, { issuer: unverified.iss, algorithms: ASSERTION_ALGS }));
  } catch (err) {
    throw invalidGrant(joseReason(err));
  }

  const now = Math.floor(Date.now() / 1000);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(issuer)) throw invalidGrant(`aud must be ${issuer}`);
  if (clientId !== undefined && claims.client_id !== clientId) {
    throw invalidGrant(`client_id claim ${claims.client_id ?? '(none)'} is not the authenticated client ${clientId}`);
  }
  if (typeof claims.exp !== 'number') throw invalidGrant('exp is missing');
  if (typeof claims.iat !== 'number') throw invalidGrant('iat is missing');
  if (claims.iat > now + IAT_SKEW) throw invalidGrant('iat is in the future');
  if (typeof claims.sub !== 'string' || !claims.sub) throw invalidGrant('sub is missing');
  if (typeof claims.jti !== 'string' || !claims.jti) throw invalidGrant('jti is missing');
  const jtiKey = `${claims.iss} ${claims.jti}`;
  if (seenJti.has(jtiKey)) throw invalidGrant('jti has already been used');
  rememberJti(jtiKey, claims.exp);
  return claims;
}

// Scope granted for an assertion: its scope claim (when it has one), narrowed
// by the scope request parameter (when given), narrowed to the known scopes.
function assertionScope(claimScope, requested, { claimRequired }) {
  let scopes = typeof claimScope === 'string' ? claimScope.split(' ').filter(Boolean) : undefined;
  if (scopes === undefined && claimRequired) scopes = [];
  if (requested) {
    const asked = requested.split(' ').filter(Boolean);
    scopes = scopes === undefined ? asked : scopes.filter((s) => asked.includes(s));
  }
  return [...new Set(scopes ?? [])].filter((s) => knownScopes.has(s)).join(' ');
}

async function issueFor(ctx, { sub, scope, gty, withRefreshToken }) {
  const { provider, client } = ctx.oidc;
  const grant = new provider.Grant({ accountId: sub, clientId: client.clientId });
  if (scope) grant.addOIDCScope(scope);
  const grantId = await grant.save();
  ctx.oidc.entity('Grant', grant);

  const at = new provider.AccessToken({ accountId: sub, client, grantId, gty, scope: scope || undefined });
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  let refreshToken;
  if (withRefreshToken) {
    const rt = new provider.RefreshToken({
      accountId: sub, client, grantId, gty, scope: scope || undefined, rotations: 0, expiresWithSession: false,
    });
    ctx.oidc.entity('RefreshToken', rt);
    refreshToken = await rt.save();
  }
  return {
    access_token: accessToken, token_type: 'Bearer', expires_in: at.expiration, scope, refresh_token: refreshToken,
  };
}

async function jwtBearerGrant(ctx) {
  const { params, client } = ctx.oidc;
  if (!params.assertion) throw new errors.InvalidRequest("missing required parameter 'assertion'");
  const claims = await verifyAssertion(params.assertion, { typ: ID_JAG_TYP, clientId: client.clientId });
  const scope = assertionScope(claims.scope, params.scope, { claimRequired: true });
  const out = await issueFor(ctx, { sub: claims.sub, scope, gty: JWT_BEARER, withRefreshToken: false });
  delete out.refresh_token;
  log(`jwt-bearer: ${claims.iss} sub ${claims.sub} client ${client.clientId} scope "${scope}"`);
  ctx.body = out;
}

async function tokenExchangeGrant(ctx) {
  const { params, client } = ctx.oidc;
  for (const name of ['subject_token', 'subject_token_type']) {
    if (!params[name]) throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  }
  if (![TT_JWT, TT_ID_TOKEN].includes(params.subject_token_type)) {
    throw new errors.InvalidRequest(`subject_token_type must be ${TT_JWT} or ${TT_ID_TOKEN}`);
  }
  if (params.requested_token_type && params.requested_token_type !== TT_ACCESS_TOKEN) {
    throw new errors.InvalidRequest(`requested_token_type must be ${TT_ACCESS_TOKEN}`);
  }
  const claims = await verifyAssertion(params.subject_token, { typ: 'JWT' });
  const scope = assertionScope(claims.scope, params.scope, { claimRequired: false });
  const out = await issueFor(ctx, { sub: claims.sub, scope, gty: TOKEN_EXCHANGE, withRefreshToken: true });
  log(`token-exchange: ${claims.iss} sub ${claims.sub} client ${client.clientId} scope "${scope}"`);
  ctx.body = { issued_token_type: TT_ACCESS_TOKEN, ...out };
}

// -------------------------------------------------------------- provider ---

const cookieKeys = newCookieKeys();
let issuer; // set once the server is listening

async function signingKeys() {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { keys: [{ ...jwk, kid: `es256-${crypto.randomBytes(4).toString('hex')}`, alg: 'ES256', use: 'sig' }] };
}

function buildProvider(jwks) {
  const provider = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients,
    clientAuthMethods: AUTH_METHODS,
    clientDefaults: {
      grant_types: GRANT_TYPES,
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    },
    jwks,
    cookies: testCookies(cookieKeys),
    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },
    scopes: [...knownScopes],
    pkce: { required: () => true },
    responseTypes: ['code'],
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    // A refresh token for every code exchange, not bound to the browser
    // session, rotated on every use (a replayed one revokes the grant).
    issueRefreshToken: async () => true,
    expiresWithSession: async () => false,
    rotateRefreshToken: true,
    interactions: {
      policy: logins.policy(),
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: accessTtl,
      AuthorizationCode: 60,
      IdToken: 300,
      Interaction: 3600,
      RefreshToken: 24 * 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    // Client jwks_uri on 127.0.0.1: skip oidc-provider's special-use IP guard.
    fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
    renderError: renderJsonError,
  });
  provider.proxy = false;

  provider.registerGrantType(JWT_BEARER, jwtBearerGrant, ['assertion', 'scope']);
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    tokenExchangeGrant,
    ['subject_token', 'subject_token_type', 'requested_token_type', 'scope', 'resource', 'audience', 'actor_token', 'actor_token_type'],
    ['resource', 'audience'],
  );

  provider.on('server_error', (ctx, err) => log('server_error', err));
  instrument(provider, stats, log);
  return provider;
}

let provider;
let handle;

// ----------------------------------------------------------- test tokens ---

// Looks a token up in the provider's models directly (no client auth).
async function tokenActivity(value) {
  if (typeof value !== 'string' || !value) return { active: false, kind: null, sub: null };
  let token = await provider.AccessToken.find(value, { ignoreExpiration: true });
  if (!token) token = await provider.RefreshToken.find(value, { ignoreExpiration: true });
  if (!token) return { active: false, kind: null, sub: null };
  let active = !token.isExpired && !token.consumed;
  if (active && token.grantId) {
    const grant = await provider.Grant.find(token.grantId);
    active = !!grant && grant.accountId === token.accountId;
  }
  return {
    active,
    kind: token.kind,
    sub: token.accountId ?? null,
    client_id: token.clientId ?? null,
    scope: token.scope ?? null,
    exp: token.exp ?? null,
    ...(token.kind === 'RefreshToken' ? { consumed: !!token.consumed } : {}),
  };
}

// ---------------------------------------------------------------- server ---

let ready = false;

async function testEndpoint(req, res, pathname) {
  const route = `${req.method} ${pathname}`;
  if (route === 'GET /_test/health') {
    return ready ? sendJson(res, 200, { ok: true, issuer }) : sendJson(res, 503, { ok: false });
  }
  if (route === 'GET /_test/stats') return sendJson(res, 200, stats.snapshot());
  if (route === 'POST /_test/stats/reset') return sendJson(res, 200, stats.reset());
  if (!['POST /_test/next-login', 'POST /_test/fault', 'POST /_test/active'].includes(route)) {
    return sendJson(res, 404, { error: 'unknown test endpoint' });
  }
  let body;
  try {
    body = await readJson(req);
  } catch {
    return sendJson(res, 400, { error: 'invalid JSON body' });
  }
  if (route === 'POST /_test/next-login') {
    if (body.sub === null) {
      logins.setNextLogin(undefined);
      return sendJson(res, 200, { sub: null });
    }
    if (typeof body.sub !== 'string' || !body.sub) return sendJson(res, 400, { error: 'sub must be a non-empty string or null' });
    logins.setNextLogin(body.sub);
    return sendJson(res, 200, { sub: body.sub });
  }
  if (route === 'POST /_test/fault') {
    try {
      const state = faults.configure(body);
      log(`fault set: ${JSON.stringify(state)}`);
      return sendJson(res, 200, state);
    } catch (err) {
      return sendJson(res, 400, { error: err.message });
    }
  }
  return sendJson(res, 200, await tokenActivity(body.token));
}

// Token requests are handled one at a time, so two concurrent uses of one
// refresh token are always a rotation followed by a detected reuse.
let tokenQueue = Promise.resolve();
function oneAtATime(req, res) {
  const run = tokenQueue.then(() => handle(req, res));
  tokenQueue = run.catch(() => {});
  return run;
}

async function route(req, res) {
  const { pathname } = new URL(req.url, 'http://127.0.0.1');

  if (pathname.startsWith('/_test/')) return testEndpoint(req, res, pathname);

  if (logins.isInteraction(req, pathname)) return logins.handle(provider, req, res);

  const delegate = pathname === '/token' && req.method === 'POST' ? oneAtATime : handle;
  const fault = faults.take(req, pathname);
  if (fault) return applyFault(fault, req, res, delegate, { stats, log });
  return delegate(req, res);
}

const jwks = await signingKeys();

servePeer({
  port,
  route,
  sendJson,
  log,
  fail,
  async configure(url) {
    issuer = url;
    try {
      provider = buildProvider(jwks);
      handle = provider.callback();
      // Static clients are validated lazily; surface bad metadata now.
      for (const { client_id: id } of clients) {
        if (!await provider.Client.find(id)) throw new Error(`client ${id} could not be loaded`);
      }
    } catch (err) {
      fail(`cannot configure oidc-provider: ${err.error_description ?? ''} ${err.stack ?? err}`);
    }
    ready = true;
    return `clients ${clients.map((c) => c.client_id).join(',')}, `
      + `trusted ${[...trusted.keys()].join(',') || '(none)'}, scopes ${[...knownScopes].join(' ')}, access ttl ${accessTtl}s`;
  },
});
