// Plumbing shared by the oidc-provider test peers: provider.mjs (the OpenID
// provider) and upstream.mjs (the upstream OAuth authorization server).
//
//   routeConsoleToStderr()   stdout is reserved for the ready line
//   peerTools(prefix)        log, fail (exit 2), JSON and port env variables
//   sendJson, readJson       JSON bodies over node:http
//   createMemoryAdapter()    in-memory adapter shared by every Provider instance
//   testCookies, renderJsonError   Provider configuration pieces
//   autoLogin(...)           logins without HTML forms (login_hint / next-login)
//   servePeer(...)           the outer http.Server, the ready line, SIGTERM/SIGINT
//
// This module imports node: built-ins only, never oidc-provider: a peer calls
// routeConsoleToStderr() and only then imports oidc-provider dynamically, and
// passes in what is needed from it (interactionPolicy, errors).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// ---------------------------------------------------------------- stdout ---

// oidc-provider prints its NOTICEs with console.info (stdout). stdout is
// reserved for the ready line, so every console method goes to stderr. Call
// this BEFORE oidc-provider is loaded (hence the peers' dynamic import).
export function routeConsoleToStderr() {
  for (const method of ['log', 'info', 'debug']) {
    // eslint-disable-next-line no-console
    console[method] = (...args) => console.error(...args);
  }
}

// ---------------------------------------------------------------- config ---

// log() writes to stderr under `prefix`; fail() logs and exits 2 (bad
// configuration). parseJsonEnv and parsePort read env variables, failing on
// invalid values.
export function peerTools(prefix) {
  const log = (...args) => console.error(prefix, ...args);

  function fail(message) {
    log(`fatal: ${message}`);
    process.exit(2);
  }

  function parseJsonEnv(name, fallback) {
    const raw = process.env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    try {
      return JSON.parse(raw);
    } catch (err) {
      return fail(`${name} is not valid JSON: ${err.message}`);
    }
  }

  function parsePort(name) {
    const port = Number.parseInt(process.env[name] ?? '0', 10);
    if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid ${name} ${process.env[name]}`);
    return port;
  }

  return { log, fail, parseJsonEnv, parsePort };
}

// ------------------------------------------------------------------ json ---

// An RFC 6749 invalid_grant whose reason reaches the client: oidc-provider would answer "grant
// request is invalid" and keep the reason in error_detail.
export function invalidGrantError(errors, why) {
  const err = new errors.InvalidGrant(why);
  err.error_description = why;
  return err;
}

export function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  return text ? JSON.parse(text) : {};
}

// --------------------------------------------------------------- adapter ---

// An oidc-provider adapter class over one in-memory store, shared by every
// Provider instance the process builds (provider.mjs rebuilds its Provider on
// a key rotation; sessions, interactions, grants and codes survive that).
// oidc-provider 9's own MemoryAdapter keeps a store per Provider instance.
// A grantId index lets a grant's whole token family be revoked at once.
//
// revokeByGrantId drops every token of the grant, whatever the model (like
// oidc-provider's MemoryAdapter), or with { perModelRevocation: true } only
// the tokens of the model it is called on.
export function createMemoryAdapter({ perModelRevocation = false } = {}) {
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

  // Drop expired entries now and then so a long test run does not grow forever.
  setInterval(() => {
    const now = Date.now();
    for (const [key, entry] of store) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) store.delete(key);
    }
  }, 60_000).unref();

  return class MemoryAdapter {
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
      if (payload.grantId && !['Grant', 'Session', 'Interaction'].includes(this.model)) {
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
      const keys = grantIndex.get(grantId);
      if (!keys) return;
      if (!perModelRevocation) {
        for (const key of keys) store.delete(key);
        grantIndex.delete(grantId);
        return;
      }
      const prefix = `${this.model}:`;
      for (const key of keys) {
        if (key.startsWith(prefix)) {
          store.delete(key);
          keys.delete(key);
        }
      }
      if (keys.size === 0) grantIndex.delete(grantId);
    }
  };
}

// ---------------------------------------------------- provider settings ---

// Cookie settings for a Provider; `keys` stay the same across rebuilds.
// Not Secure: oidc-provider marks cookies Secure only when the request is
// https (ctx.secure), and the proxy setting stays off.
export function testCookies(keys) {
  return {
    keys,
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  };
}

export const newCookieKeys = () => [crypto.randomBytes(32).toString('base64url')];

// Errors as JSON, never oidc-provider's HTML error page.
export async function renderJsonError(ctx, out) {
  ctx.type = 'json';
  ctx.body = out;
}

// ----------------------------------------------------------- interaction ---

// Logins without HTML forms. The account is the authorization request's
// login_hint, else the one set with setNextLogin (POST /_test/next-login,
// sticky); every requested scope is granted.
//
// unknownAccount(id) returns why `id` is not a test account (answered as 400
// unknown_test_account), or undefined; by default every id is an account.
// refuseLogin(id) returns why a known account may not sign in (the interaction
// then finishes with access_denied and that error_description, which
// oidc-provider redirects to the client), or undefined (the default).
export function autoLogin({
  interactionPolicy, errors, sendJson: send, log, unknownAccount = () => undefined, refuseLogin = () => undefined,
}) {
  let nextLogin;
  const targetAccount = (params) => params.login_hint ?? nextLogin;

  // The interaction policy: when the account the test asked for differs from
  // the browser session's account, require a fresh login instead of silently
  // reusing the existing session.
  function policy() {
    const base = interactionPolicy.base();
    base.get('login').checks.add(new interactionPolicy.Check(
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
    return base;
  }

  async function finishInteraction(provider, req, res) {
    const interaction = await provider.interactionDetails(req, res);
    const { prompt, params } = interaction;
    const result = {};
    let accountId;

    if (prompt.name === 'login') {
      accountId = targetAccount(params);
      if (accountId === undefined) {
        return send(res, 400, { error: 'no_test_account', error_description: 'no login_hint and no POST /_test/next-login' });
      }
      const unknown = unknownAccount(accountId);
      if (unknown !== undefined) {
        return send(res, 400, { error: 'unknown_test_account', error_description: unknown });
      }
      const refusal = refuseLogin(accountId);
      if (refusal !== undefined) {
        log(`interaction ${interaction.uid}: login of ${accountId} refused: ${refusal}`);
        return provider.interactionFinished(req, res, { error: 'access_denied', error_description: refusal }, { mergeWithLastSubmission: false });
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

  return {
    policy,
    targetAccount,
    setNextLogin(sub) {
      nextLogin = sub;
    },
    // GET /interaction/<uid>: whether this request is one, then handling it.
    isInteraction: (req, pathname) => /^\/interaction\/[^/]+$/.test(pathname) && req.method === 'GET',
    async handle(provider, req, res) {
      try {
        return await finishInteraction(provider, req, res);
      } catch (err) {
        if (err instanceof errors.SessionNotFound) {
          return send(res, 400, { error: err.error, error_description: err.error_description ?? err.message });
        }
        throw err;
      }
    },
  };
}

// ---------------------------------------------------------------- server ---

// The peer's http.Server on 127.0.0.1:`port`. `route(req, res)` answers every
// request (a throw becomes a 500 JSON answer). Once listening, `configure(issuer)`
// (may be async) sets the peer up and returns a summary for the log line; it
// calls fail() itself on a bad configuration. Then the ready line goes to
// stdout. SIGTERM and SIGINT close the server and exit 0.
export function servePeer({
  port, route, configure, sendJson: send, log, fail,
}) {
  const server = http.createServer((req, res) => {
    route(req, res).catch((err) => {
      log('request failed', req.method, req.url, err);
      if (!res.headersSent) send(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
      else res.destroy();
    });
  });

  server.listen(port, '127.0.0.1', async () => {
    const issuer = `http://127.0.0.1:${server.address().port}`;
    const summary = await configure(issuer);
    log(`listening, issuer ${issuer}, ${summary}`);
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

  return server;
}
