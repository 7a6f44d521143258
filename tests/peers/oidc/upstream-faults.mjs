// Test instrumentation for the upstream authorization server peer
// (upstream.mjs): fault injection in the outer http.Server in front of
// oidc-provider, and the request statistics behind GET /_test/stats.
//
//   POST /_test/fault {"mode":"...","count":N,"ms":M,"path":"token"|"revocation"|"introspection"}
//
// A fault applies to the next `count` POST requests to `path` (default
// "token"); without `count` it sticks until {"mode":"none"}. Setting a new
// fault replaces the previous one.

import { sendJson as sendJsonBase } from './peer-common.mjs';

export const FAULT_PATHS = {
  token: '/token',
  revocation: '/token/revocation',
  introspection: '/token/introspection',
};

// Modes answered without the provider seeing the request (provider state is untouched).
const SHORT_CIRCUIT = {
  error500: { status: 500, body: { error: 'server_error' } },
  unavailable: { status: 503, body: { error: 'temporarily_unavailable' } },
  invalid_grant: { status: 400, body: { error: 'invalid_grant', error_description: 'injected' } },
  rate_limited: { status: 429, body: { error: 'slow_down' }, headers: { 'retry-after': '1' } },
};

// Modes handled normally by the provider, with a field removed from the JSON answer.
const STRIP_FIELD = {
  drop_refresh_token: 'refresh_token',
  drop_expires_in: 'expires_in',
};

export const FAULT_MODES = ['none', 'slow', 'slow_answer', ...Object.keys(SHORT_CIRCUIT), ...Object.keys(STRIP_FIELD)];

export class Faults {
  #fault; // { mode, remaining (undefined = sticky), ms, path }

  // Validates and installs a fault; returns the new state. Throws on bad input.
  configure(body) {
    const { mode, count, ms, path = 'token' } = body ?? {};
    if (!FAULT_MODES.includes(mode)) throw new Error(`mode must be one of ${FAULT_MODES.join(', ')}`);
    if (mode === 'none') {
      this.#fault = undefined;
      return this.state();
    }
    if (!Object.hasOwn(FAULT_PATHS, path)) throw new Error(`path must be one of ${Object.keys(FAULT_PATHS).join(', ')}`);
    if (count !== undefined && count !== null && (!Number.isInteger(count) || count < 1)) {
      throw new Error('count must be a positive integer (omit it for a sticky fault)');
    }
    if (ms !== undefined && (!Number.isInteger(ms) || ms < 0)) throw new Error('ms must be a non-negative integer');
    // `ms` delays the canned answers too (default none); `slow` waits 5 s unless told.
    const slow = mode === 'slow' || mode === 'slow_answer';
    this.#fault = { mode, remaining: count ?? undefined, ms: ms ?? (slow ? 5000 : 0), path };
    return this.state();
  }

  state() {
    if (!this.#fault) return { mode: 'none' };
    const { mode, remaining, ms, path } = this.#fault;
    return { mode, path, remaining: remaining ?? null, ...(mode === 'slow' ? { ms } : {}) };
  }

  // The fault for this request, if any; consumes one application of it.
  take(req, pathname) {
    const fault = this.#fault;
    if (!fault || req.method !== 'POST' || FAULT_PATHS[fault.path] !== pathname) return undefined;
    if (fault.remaining !== undefined) {
      fault.remaining -= 1;
      if (fault.remaining <= 0) this.#fault = undefined;
    }
    return { mode: fault.mode, ms: fault.ms, path: fault.path };
  }
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  try {
    return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
  } catch {
    return {};
  }
}

// Buffers whatever the provider writes and hands the JSON body to `transform`
// before it goes out, with content-length fixed up. Non-JSON bodies pass as is.
function interceptJson(res, transform) {
  const chunks = [];
  const originalWrite = res.write;
  const originalEnd = res.end;
  const toBuffer = (chunk, encoding) => (Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8'));

  res.write = function write(chunk, encoding, callback) {
    if (chunk !== undefined && chunk !== null) chunks.push(toBuffer(chunk, encoding));
    const cb = typeof encoding === 'function' ? encoding : callback;
    if (cb) process.nextTick(cb);
    return true;
  };

  res.end = function end(chunk, encoding, callback) {
    let cb = callback;
    if (typeof chunk === 'function') {
      cb = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
    }
    if (chunk !== undefined && chunk !== null) chunks.push(toBuffer(chunk, encoding));
    let body = Buffer.concat(chunks);
    const type = String(res.getHeader('content-type') ?? '');
    if (type.includes('json') && body.length) {
      try {
        body = Buffer.from(JSON.stringify(transform(JSON.parse(body.toString('utf8')))));
      } catch {
        // not JSON after all: leave it untouched
      }
    }
    if (!res.headersSent) res.setHeader('content-length', body.length);
    res.write = originalWrite;
    res.end = originalEnd;
    return originalEnd.call(res, body, cb);
  };
}

// peer-common's sendJson, with Cache-Control: no-store (every upstream.mjs answer).
export function sendJson(res, status, body, headers = {}) {
  sendJsonBase(res, status, body, { 'cache-control': 'no-store', ...headers });
}

// Runs `delegate(req, res)` (the provider) under `fault`.
export async function applyFault(fault, req, res, delegate, { stats, log }) {
  log(`fault ${fault.mode} on ${fault.path}`);
  stats.faultApplied();
  if (fault.mode === 'slow') {
    await new Promise((resolve) => { setTimeout(resolve, fault.ms); });
    return delegate(req, res);
  }
  if (fault.mode === 'slow_answer') {
    // The AS does the work at once (a refresh token is rotated) and answers `ms` later: a
    // client that gives up or dies meanwhile never learns the result.
    const originalEnd = res.end;
    res.end = function end(...args) {
      setTimeout(() => { originalEnd.apply(res, args); }, fault.ms);
      return res;
    };
    return delegate(req, res);
  }
  const canned = SHORT_CIRCUIT[fault.mode];
  if (canned) {
    const form = await readForm(req);
    if (fault.ms > 0) await new Promise((resolve) => { setTimeout(resolve, fault.ms); });
    if (fault.path === 'token') stats.tokenAnswered(form.grant_type, canned.status, canned.body);
    return sendJson(res, canned.status, canned.body, canned.headers);
  }
  const field = STRIP_FIELD[fault.mode];
  if (field) {
    interceptJson(res, (json) => {
      if (json && typeof json === 'object') delete json[field];
      return json;
    });
  }
  return delegate(req, res);
}

// ------------------------------------------------------------ statistics ---

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const REUSE_DETAIL = 'refresh token already used'; // oidc-provider's refresh_token grant
const bump = (counter, key) => { counter[key] = (counter[key] ?? 0) + 1; };

export class Stats {
  #s;

  constructor() {
    this.reset();
  }

  reset() {
    this.#s = {
      token_requests: {}, // grant_type -> n (every answer, injected ones included)
      token_errors: {}, // error -> n (likewise)
      refreshes: 0, // successful refresh_token grants
      reuse_detected: 0, // refresh token replays (each revoked a grant)
      revocations: 0, // revocation requests the provider answered 200
      revoked: [], // { token_type_hint, client_id, at, kind } per such request
      jwt_bearer: 0, // successful jwt-bearer (ID-JAG) grants
      token_exchange: 0, // successful token exchanges
      faults_applied: 0,
    };
    return this.#s;
  }

  snapshot() {
    return this.#s;
  }

  faultApplied() {
    this.#s.faults_applied += 1;
  }

  tokenAnswered(grantType = '(none)', status, body) {
    const s = this.#s;
    bump(s.token_requests, grantType);
    if (status >= 400) {
      bump(s.token_errors, body?.error ?? String(status));
    } else if (status === 200) {
      if (grantType === 'refresh_token') s.refreshes += 1;
      if (grantType === JWT_BEARER) s.jwt_bearer += 1;
      if (grantType === TOKEN_EXCHANGE) s.token_exchange += 1;
    }
  }

  revoked(entry) {
    this.#s.revocations += 1;
    this.#s.revoked.push(entry);
  }

  reuseDetected() {
    this.#s.reuse_detected += 1;
  }
}

// Hooks `stats` into a Provider (before provider.callback() is taken).
export function instrument(provider, stats, log) {
  provider.on('grant.error', (ctx, err) => {
    // oidc-provider keeps the reason of an invalid_grant in error_detail; pass it on.
    if (err.error_detail && ctx.body && typeof ctx.body === 'object') ctx.body.error_description = err.error_detail;
    if (err.error_detail === REUSE_DETAIL) {
      stats.reuseDetected();
      log('refresh token reuse detected: grant revoked');
    }
  });

  provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'token') {
      stats.tokenAnswered(ctx.oidc.params?.grant_type, ctx.status, ctx.body);
    } else if (route === 'revocation' && ctx.status === 200) {
      const { entities, params, client } = ctx.oidc;
      stats.revoked({
        token_type_hint: params?.token_type_hint ?? null,
        client_id: client?.clientId ?? null,
        at: Math.floor(Date.now() / 1000),
        kind: ['RefreshToken', 'AccessToken'].find((kind) => entities[kind]) ?? null,
      });
    }
  });
}
