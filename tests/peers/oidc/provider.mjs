// OpenID Provider test peer (oidc-provider 9.x) for integration tests.
//
//   OP_PORT=0 OP_CLIENTS='[...]' OP_ACCOUNTS='{...}' node tests/peers/oidc/provider.mjs
//
// stdout carries exactly one line, the ready line:
//   {"ready":true,"issuer":"http://127.0.0.1:<port>"}
// Everything else goes to stderr. See README.md for the control endpoints.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints its NOTICEs with console.info (stdout). stdout is
// reserved for the ready line, so route every console method to stderr
// BEFORE oidc-provider is loaded (hence the dynamic import below).
for (const method of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => console.error(...args);
}

const { default: Provider, interactionPolicy, errors } = await import('oidc-provider');
const { generateKeyPair, exportJWK } = await import('jose');

const log = (...args) => console.error('[oidc-peer]', ...args);

function fail(message) {
  log(`fatal: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------- config ---

function parseJsonEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  try {
    return JSON.parse(raw);
  } catch (err) {
    return fail(`${name} is not valid JSON: ${err.message}`);
  }
}

const port = Number.parseInt(process.env.OP_PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid OP_PORT ${process.env.OP_PORT}`);

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

const clients = clientsInput.map((c, i) => {
  if (!c || typeof c.client_id !== 'string' || typeof c.client_secret !== 'string' || !Array.isArray(c.redirect_uris)) {
    fail(`OP_CLIENTS[${i}] needs client_id, client_secret and redirect_uris`);
  }
  return {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // oidc-provider accepts client_secret_post as well for a client
    // registered with client_secret_basic (and vice versa).
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    ...c,
  };
});

// ------------------------------------------------------------ test state ---

let nextLogin; // account id set by POST /_test/next-login (sticky)
const targetAccount = (params) => params.login_hint ?? nextLogin;

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
// (which rebuilds the Provider). oidc-provider 9's own MemoryAdapter keeps a
// separate store per Provider instance, so it cannot be used for that.

const store = new Map(); // key -> { payload, expiresAt }
const sessionUidIndex = new Map(); // uid -> session id
const userCodeIndex = new Map(); // userCode -> id
const grantIndex = new Map(); // grantId -> Set<key>

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) sessionUidIndex.set(payload.uid, id);
    if (payload.userCode) userCodeIndex.set(payload.userCode, id);
    if (payload.grantId && this.model !== 'Grant' && this.model !== 'Session' && this.model !== 'Interaction') {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    if (id === undefined) return undefined;
    return storeGet(this.key(id));
  }

  async findByUid(uid) {
    return this.find(sessionUidIndex.get(uid));
  }

  async findByUserCode(userCode) {
    return this.find(userCodeIndex.get(userCode));
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    const payload = storeGet(key);
    store.delete(key);
    if (payload?.uid && sessionUidIndex.get(payload.uid) === id) sessionUidIndex.delete(payload.uid);
    if (payload?.userCode && userCodeIndex.get(payload.userCode) === id) userCodeIndex.delete(payload.userCode);
  }

  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) store.delete(key);
    grantIndex.delete(grantId);
  }
}

// Drop expired entries now and then so a long test run does not grow forever.
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) store.delete(key);
  }
}, 60_000).unref();

// -------------------------------------------------------------- provider ---

const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
let issuer; // set once the server is listening

function buildPolicy() {
  const policy = interactionPolicy.base();
  // Test convenience: when the account the test asked for (login_hint, else
  // /_test/next-login) differs from the browser session's account, require
  // a fresh login instead of silently reusing the existing session.
  policy.get('login').checks.add(new interactionPolicy.Check(
    'test_peer_account_switch',
    'the requested test account differs from the session account',
    (ctx) => {
      const wanted = targetAccount(ctx.oidc.params);
      const current = ctx.oidc.session.accountId;
      if (wanted !== undefined && current !== undefined && current !== wanted) {
        return interactionPolicy.Check.REQUEST_PROMPT;
      }
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    },
  ));
  return policy;
}

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
    cookies: {
      keys: cookieKeys,
      // Not Secure: oidc-provider only marks cookies Secure when the request
      // is https (ctx.secure), and the proxy setting stays off.
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    async findAccount(ctx, sub) {
      const claims = accounts[sub];
      if (!claims) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...claims, sub };
        },
      };
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
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
    // RFC 9207 `iss` in the authorization response is always on in
    // oidc-provider 9 (there is no issAuthResp feature flag any more).
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: false },
      introspection: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    interactions: {
      policy: buildPolicy(),
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 300,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.proxy = false;
  provider.on('server_error', (ctx, err) => log('server_error', err));
  return { provider, handle: provider.callback() };
}

let current; // { provider, handle }

// ----------------------------------------------------------- interaction ---

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  return text ? JSON.parse(text) : {};
}

async function finishInteraction(req, res) {
  const { provider } = current;
  const interaction = await provider.interactionDetails(req, res);
  const { prompt, params } = interaction;
  const result = {};
  let accountId;

  if (prompt.name === 'login') {
    accountId = targetAccount(params);
    if (accountId === undefined) {
      return sendJson(res, 400, { error: 'no_test_account', error_description: 'no login_hint and no POST /_test/next-login' });
    }
    if (!Object.hasOwn(accounts, accountId)) {
      return sendJson(res, 400, { error: 'unknown_test_account', error_description: `account ${accountId} is not in OP_ACCOUNTS` });
    }
    if (interaction.session?.accountId && interaction.session.accountId !== accountId) {
      // Switching accounts in an existing browser session: oidc-provider
      // would answer with an HTML logout-confirmation form. End the old
      // session here so the resumed request starts a fresh one instead.
      const old = await provider.Session.findByUid(interaction.session.uid);
      if (old) await old.destroy();
      interaction.session = undefined;
      interaction.grantId = undefined;
      await interaction.save(interaction.exp - Math.floor(Date.now() / 1000));
    }
    result.login = { accountId };
  } else {
    accountId = interaction.session?.accountId;
  }

  // Consent: grant everything that was asked for.
  let grant;
  if (interaction.grantId) grant = await provider.Grant.find(interaction.grantId);
  if (!grant || grant.accountId !== accountId) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  if (params.scope) grant.addOIDCScope(params.scope);
  const details = prompt.details ?? {};
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  result.consent = { grantId };

  log(`interaction ${interaction.uid}: ${prompt.name} -> account ${accountId}, grant ${grantId}`);
  return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

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
      nextLogin = undefined;
      return sendJson(res, 200, { sub: null });
    }
    if (typeof body.sub !== 'string' || !Object.hasOwn(accounts, body.sub)) {
      return sendJson(res, 400, { error: 'sub must name an account in OP_ACCOUNTS' });
    }
    nextLogin = body.sub;
    return sendJson(res, 200, { sub: nextLogin });
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

  if (pathname.startsWith('/_test/')) {
    return sendJson(res, 404, { error: 'unknown test endpoint' });
  }

  if (/^\/interaction\/[^/]+$/.test(pathname) && req.method === 'GET') {
    try {
      return await finishInteraction(req, res);
    } catch (err) {
      if (err instanceof errors.SessionNotFound) {
        return sendJson(res, 400, { error: err.error, error_description: err.error_description ?? err.message });
      }
      throw err;
    }
  }

  return current.handle(req, res);
}

const server = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    log('request failed', req.method, req.url, err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  });
});

await rotateKeyMaterial();

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  try {
    current = buildProvider();
  } catch (err) {
    fail(`cannot configure oidc-provider: ${err.stack ?? err}`);
  }
  ready = true;
  log(`listening, issuer ${issuer}, clients ${clients.map((c) => c.client_id).join(',')}, accounts ${Object.keys(accounts).join(',')}`);
  process.stdout.write(`${JSON.stringify({ ready: true, issuer })}\n`);
});

server.on('error', (err) => fail(`server error: ${err.message}`));

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
