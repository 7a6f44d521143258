// OpenID Provider test peer (oidc-provider 9.x) for integration tests.
//
//   OP_PORT=0 OP_CLIENTS='[...]' OP_ACCOUNTS='{...}' node tests/peers/oidc/provider.mjs
//
// stdout carries exactly one line, the ready line:
//   {"ready":true,"issuer":"http://127.0.0.1:<port>"}
// Everything else goes to stderr. See README.md for the control endpoints.
// Besides the sign-in code flow it issues rotated refresh tokens (scope
// offline_access) and, like Okta's Cross App Access, ID-JAGs by RFC 8693
// token exchange of its own ID tokens (id-jag.mjs). The plumbing shared with
// upstream.mjs (console routing, env parsing, the in-memory adapter, automatic
// logins, the outer server) is in peer-common.mjs.

import * as crypto from 'node:crypto';

import {
  autoLogin, createMemoryAdapter, newCookieKeys, peerTools, readJson, renderJsonError,
  routeConsoleToStderr, sendJson, servePeer, testCookies,
} from './peer-common.mjs';
import {
  TOKEN_EXCHANGE, TOKEN_EXCHANGE_PARAMS, audiencesToJson, createIdJagGrant, parseAudiences,
} from './id-jag.mjs';

// stdout is reserved for the ready line: route the console to stderr BEFORE
// oidc-provider is loaded (hence the dynamic import below).
routeConsoleToStderr();

const { default: Provider, interactionPolicy, errors } = await import('oidc-provider');
const { generateKeyPair, exportJWK } = await import('jose');

const { log, fail, parseJsonEnv, parsePort } = peerTools('[oidc-peer]');

// ---------------------------------------------------------------- config ---

const port = parsePort('OP_PORT');

const clientsInput = parseJsonEnv('OP_CLIENTS', [
  { client_id: 'test-client', client_secret: 'test-secret', redirect_uris: ['http://127.0.0.1:9/cb'] },
]);
if (!Array.isArray(clientsInput)) fail('OP_CLIENTS must be a JSON array');

const accounts = parseJsonEnv('OP_ACCOUNTS', {
  u1: { email: 'ann@acme.example', email_verified: true, name: 'Ann', groups: ['Engineering'] },
});
if (accounts === null || typeof accounts !== 'object' || Array.isArray(accounts)) {
  fail('OP_ACCOUNTS must be a JSON object mapping account id to claims');
}

let idJagAudiences;
try {
  idJagAudiences = parseAudiences(parseJsonEnv('OP_ID_JAG_AUDIENCES', {}));
} catch (err) {
  fail(err.message);
}

const clients = clientsInput.map((c, i) => {
  if (!c || typeof c.client_id !== 'string' || typeof c.client_secret !== 'string' || !Array.isArray(c.redirect_uris)) {
    fail(`OP_CLIENTS[${i}] needs client_id, client_secret and redirect_uris`);
  }
  const grantTypes = c.grant_types ?? ['authorization_code'];
  return {
    response_types: ['code'],
    // oidc-provider accepts client_secret_post as well for a client
    // registered with client_secret_basic (and vice versa).
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    ...c,
    // Every client may exchange its ID tokens for ID-JAGs (id-jag.mjs);
    // refresh_token is opt-in.
    grant_types: Array.isArray(grantTypes) ? [...new Set([...grantTypes, TOKEN_EXCHANGE])] : grantTypes,
  };
});

// Clients allowed the refresh_token grant (see route(): offline_access).
const refreshClients = new Set(clients.filter((c) => c.grant_types?.includes('refresh_token')).map((c) => c.client_id));

// ------------------------------------------------------------ test state ---

// Accounts switched off with POST /_test/disable: their sign-ins end in
// access_denied, and their refresh tokens, codes and ID tokens are refused at /token.
const disabled = new Set();

function accountDisabledError() {
  const err = new errors.InvalidGrant('the account is disabled');
  err.error_description = 'the account is disabled';
  return err;
}

// Logins for login_hint, else the POST /_test/next-login account (sticky).
const logins = autoLogin({
  interactionPolicy,
  errors,
  sendJson,
  log,
  unknownAccount: (id) => (Object.hasOwn(accounts, id) ? undefined : `account ${id} is not in OP_ACCOUNTS`),
  refuseLogin: (id) => (disabled.has(id) ? 'the account is disabled' : undefined),
});

// ------------------------------------------------------------------ keys ---
// Generated with jose at start-up and on every rotation; never written to disk.

let generation = 0;
let currentKeys = []; // private JWKs used for signing (ES256 first, RS256)
let retiredKeys = []; // previous generations, published for verification only
const MAX_RETIRED = 8;

async function newSigningKey(alg) {
  const { privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === 'RS256' ? { modulusLength: 2048 } : {}),
  });
  const jwk = await exportJWK(privateKey);
  jwk.kid = `${alg.toLowerCase()}-g${generation}-${crypto.randomBytes(4).toString('hex')}`;
  jwk.alg = alg;
  jwk.use = 'sig';
  return jwk;
}

async function rotateKeyMaterial({ keepOld = true } = {}) {
  generation += 1;
  const fresh = [await newSigningKey('ES256'), await newSigningKey('RS256')];
  if (keepOld) {
    // key_ops ["verify"] excludes a key from oidc-provider's signing-key
    // selection (KeyStore.selectForSign) while it stays in the published JWKS.
    const retired = currentKeys.map((k) => ({ ...k, key_ops: ['verify'] }));
    retiredKeys = [...retired, ...retiredKeys].slice(0, MAX_RETIRED);
  } else {
    retiredKeys = [];
  }
  currentKeys = fresh;
  return {
    kid: fresh[0].kid,
    kids: Object.fromEntries(fresh.map((k) => [k.alg, k.kid])),
  };
}

// --------------------------------------------------------------- adapter ---
// One in-memory store shared by every Provider instance this process builds,
// so sessions, interactions, grants and codes survive a key rotation
// (which rebuilds the Provider).

const SharedMemoryAdapter = createMemoryAdapter();

// -------------------------------------------------------------- provider ---

const cookieKeys = newCookieKeys();
let issuer; // set once the server is listening

// RFC 8693 token exchange issuing ID-JAGs (id-jag.mjs); survives rebuilds.
const idJag = createIdJagGrant({
  errors,
  log,
  issuer: () => issuer,
  audiences: idJagAudiences,
  account: (sub) => (Object.hasOwn(accounts, sub) ? { claims: accounts[sub], disabled: disabled.has(sub) } : undefined),
  signingKey: () => currentKeys.find((k) => k.alg === 'ES256'),
  publishedKeys: () => [...currentKeys, ...retiredKeys],
});

function buildProvider() {
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients,
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    },
    jwks: { keys: [...currentKeys, ...retiredKeys] },
    cookies: testCookies(cookieKeys),
    async findAccount(ctx, sub) {
      const claims = accounts[sub];
      if (!claims) return undefined;
      if (disabled.has(sub)) {
        // /token (refresh_token, authorization_code): invalid_grant. An
        // authorization request riding a live session of the account:
        // access_denied, redirected to the client. Elsewhere (userinfo) the
        // account is simply gone.
        const route = ctx?.oidc?.route;
        if (route === 'token') throw accountDisabledError();
        if (route === 'authorization' || route === 'resume') throw new errors.AccessDenied('the account is disabled');
        return undefined;
      }
      return {
        accountId: sub,
        async claims() {
          return { ...claims, sub };
        },
      };
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username',
        'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at'],
      groups: ['groups'],
    },
    // Scope-requested claims go straight into the ID token.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    responseTypes: ['code'],
    // Refresh tokens: for a client allowed the refresh_token grant when the
    // code's scope has offline_access (oidc-provider's default rule, spelled
    // out). oidc-provider drops offline_access from an authorization request
    // without prompt=consent, so route() adds prompt=consent to such requests.
    // Not bound to the browser session; rotated on every use, and a replayed
    // one revokes the grant.
    // (expiresWithSession's default already is false for offline_access.)
    issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    rotateRefreshToken: true,
    // RFC 9207 `iss` in the authorization response is always on in
    // oidc-provider 9 (there is no issAuthResp feature flag any more).
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true }, // RFC 7009: the broker revokes the refresh tokens it kept
      introspection: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    interactions: {
      policy: logins.policy(),
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 300,
      Interaction: 3600,
      RefreshToken: 24 * 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    renderError: renderJsonError,
  });
  provider.proxy = false;
  provider.registerGrantType(TOKEN_EXCHANGE, idJag.handler, TOKEN_EXCHANGE_PARAMS);
  provider.on('grant.error', (ctx, err) => {
    // oidc-provider keeps the reason for a refresh_token grant's invalid_grant
    // in error_detail ("refresh token already used", ...); pass it on.
    if (ctx.oidc?.params?.grant_type === 'refresh_token' && err.error_detail && ctx.body && typeof ctx.body === 'object') {
      ctx.body.error_description = err.error_detail;
    }
    idJag.onTokenError(ctx, err);
  });
  provider.on('server_error', (ctx, err) => {
    log('server_error', err);
    idJag.onTokenError(ctx, err);
  });
  return { provider, handle: provider.callback() };
}

let current; // { provider, handle }

// ---------------------------------------------------------------- server ---

let ready = false;

async function route(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const { pathname } = url;

  if (pathname === '/_test/health' && req.method === 'GET') {
    return ready ? sendJson(res, 200, { ok: true, issuer }) : sendJson(res, 503, { ok: false });
  }

  if (pathname === '/_test/next-login' && req.method === 'POST') {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return sendJson(res, 400, { error: 'invalid JSON body' });
    }
    if (body.sub === null) {
      logins.setNextLogin(undefined);
      return sendJson(res, 200, { sub: null });
    }
    if (typeof body.sub !== 'string' || !Object.hasOwn(accounts, body.sub)) {
      return sendJson(res, 400, { error: 'sub must name an account in OP_ACCOUNTS' });
    }
    logins.setNextLogin(body.sub);
    return sendJson(res, 200, { sub: body.sub });
  }

  if (pathname === '/_test/rotate-keys' && req.method === 'POST') {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return sendJson(res, 400, { error: 'invalid JSON body' });
    }
    const out = await rotateKeyMaterial({ keepOld: body.keep_old !== false });
    current = buildProvider();
    log(`rotated signing keys: ${JSON.stringify(out.kids)}`);
    return sendJson(res, 200, out);
  }

  if (pathname === '/_test/disable' && req.method === 'POST') {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return sendJson(res, 400, { error: 'invalid JSON body' });
    }
    if (typeof body.sub !== 'string' || !Object.hasOwn(accounts, body.sub)) {
      return sendJson(res, 400, { error: 'sub must name an account in OP_ACCOUNTS' });
    }
    if (typeof body.disabled !== 'boolean') return sendJson(res, 400, { error: 'disabled must be true or false' });
    if (body.disabled) disabled.add(body.sub);
    else disabled.delete(body.sub);
    log(`account ${body.sub} ${body.disabled ? 'disabled' : 'enabled'}`);
    return sendJson(res, 200, { sub: body.sub, disabled: body.disabled });
  }

  if (pathname === '/_test/id-jag-count' && req.method === 'GET') return sendJson(res, 200, idJag.counts());

  if (pathname === '/_test/id-jag-audiences' && req.method === 'POST') {
    let map;
    try {
      map = parseAudiences(await readJson(req), 'body');
    } catch (err) {
      return sendJson(res, 400, { error: err instanceof SyntaxError ? 'invalid JSON body' : err.message });
    }
    idJag.setAudiences(map);
    log(`ID-JAG audiences: ${[...map.keys()].join(', ') || '(none)'}`);
    return sendJson(res, 200, audiencesToJson(map));
  }

  if (pathname.startsWith('/_test/')) {
    return sendJson(res, 404, { error: 'unknown test endpoint' });
  }

  if (logins.isInteraction(req, pathname)) return logins.handle(current.provider, req, res);

  // oidc-provider keeps offline_access only when the authorization request
  // has prompt=consent. A client allowed the refresh_token grant that asks
  // for offline_access without any prompt is handled as prompt=consent (the
  // peer grants consent itself, so this costs one interaction round trip
  // even with a live session).
  if (pathname === '/auth' && req.method === 'GET' && !url.searchParams.has('prompt')
    && url.searchParams.get('scope')?.split(' ').includes('offline_access')
    && refreshClients.has(url.searchParams.get('client_id'))) {
    url.searchParams.set('prompt', 'consent');
    req.url = `${url.pathname}${url.search}`;
  }

  return current.handle(req, res);
}

await rotateKeyMaterial();

servePeer({
  port,
  route,
  sendJson,
  log,
  fail,
  configure(url) {
    issuer = url;
    try {
      current = buildProvider();
    } catch (err) {
      fail(`cannot configure oidc-provider: ${err.stack ?? err}`);
    }
    ready = true;
    return `clients ${clients.map((c) => c.client_id).join(',')}, accounts ${Object.keys(accounts).join(',')}, `
      + `ID-JAG audiences ${[...idJagAudiences.keys()].join(',') || '(none)'}`;
  },
});
