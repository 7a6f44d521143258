// End-to-end self-test of the upstream authorization server test peer.
//   node tests/peers/oidc/upstream-selftest.mjs     (exit 0 = all checks passed)
//
// Serves a fake trusted issuer (a JWKS on its own port, assertions signed
// here with ES256) and a private_key_jwt client's JWKS, starts upstream.mjs
// against them and drives every grant, the revocation and introspection
// endpoints, the fault modes and the control endpoints. The helpers shared
// with selftest.mjs are in selftest-common.mjs.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

import {
  CookieJar, REDIRECT, b64u, check, finish, follow, postJson, startPeer,
} from './selftest-common.mjs';

const peerPath = fileURLToPath(new URL('./upstream.mjs', import.meta.url));
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
const TT_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const ACCESS_TTL = 30;

// -------------------------------------------------------------- helpers ---
const now = () => Math.floor(Date.now() / 1000);

// POST a form with client authentication: basic, post, or private_key_jwt.
async function postForm(url, client, params) {
  const body = new URLSearchParams(params);
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (client.auth === 'basic') {
    const enc = encodeURIComponent;
    headers.authorization = `Basic ${Buffer.from(`${enc(client.client_id)}:${enc(client.client_secret)}`).toString('base64')}`;
  } else if (client.auth === 'post') {
    body.set('client_id', client.client_id);
    body.set('client_secret', client.client_secret);
  } else {
    body.set('client_id', client.client_id);
    body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    body.set('client_assertion', await client.assertion(url));
  }
  const started = Date.now();
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, json, headers: res.headers, ms: Date.now() - started };
}

// ------------------------------------------------------- fake issuer(s) ---
const issuerKey = await generateKeyPair('ES256', { extractable: true });
const rogueKey = await generateKeyPair('ES256', { extractable: true });
const clientKey = await generateKeyPair('ES256', { extractable: true });
const ISSUER_KID = 'acme-1';
const publicJwk = async (key, kid) => ({ ...await exportJWK(key.publicKey), kid, alg: 'ES256', use: 'sig' });
const documents = {
  '/orgs/acme/jwks.json': { keys: [await publicJwk(issuerKey, ISSUER_KID)] },
  '/clients/pkj/jwks.json': { keys: [await publicJwk(clientKey, 'pkj-1')] },
};
const fake = http.createServer((req, res) => {
  const doc = documents[new URL(req.url, 'http://x').pathname];
  res.writeHead(doc ? 200 : 404, { 'content-type': 'application/json' });
  res.end(JSON.stringify(doc ?? { error: 'not found' }));
});
fake.listen(0, '127.0.0.1');
await once(fake, 'listening');
const fakeBase = `http://127.0.0.1:${fake.address().port}`;
const TRUSTED_ISSUER = `${fakeBase}/orgs/acme`;

const CLIENTS = [
  { client_id: 'app', client_secret: 'app-secret', redirect_uris: [REDIRECT] },
  { client_id: 'app-post', client_secret: 'post-secret', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_post' },
  { client_id: 'pkj', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: `${fakeBase}/clients/pkj/jwks.json` },
];
const app = { ...CLIENTS[0], auth: 'basic' };
const appPost = { ...CLIENTS[1], auth: 'post' };
let issuer; // the peer's
const clientAssertion = (key, kid) => (url) => new SignJWT({})
  .setProtectedHeader({ alg: 'ES256', kid })
  .setIssuer('pkj').setSubject('pkj').setAudience(issuer)
  .setJti(b64u(crypto.randomBytes(12)))
  .setIssuedAt()
  .setExpirationTime('60s')
  .sign(key.privateKey);
const pkj = { client_id: 'pkj', auth: 'jwt', assertion: clientAssertion(clientKey, 'pkj-1') };

// An assertion from the fake issuer; `overrides` replace claims (undefined removes one); typ null = no typ.
async function assertion({ typ = 'oauth-id-jag+jwt', key = issuerKey, kid = ISSUER_KID, ...overrides } = {}) {
  const claims = {
    iss: TRUSTED_ISSUER,
    sub: 'alice',
    aud: issuer,
    client_id: 'app',
    jti: b64u(crypto.randomBytes(12)),
    iat: now(),
    exp: now() + 300,
    scope: 'read write',
    ...overrides,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  const header = { alg: 'ES256', kid };
  if (typ !== null) header.typ = typ;
  return new SignJWT(claims).setProtectedHeader(header).sign(key.privateKey);
}

// ----------------------------------------------------------------- main ---
const peer = startPeer(peerPath, {
  UP_PORT: '0',
  UP_CLIENTS: JSON.stringify(CLIENTS),
  UP_TRUSTED: JSON.stringify([{ issuer: TRUSTED_ISSUER, jwks_uri: `${fakeBase}/orgs/acme/jwks.json` }]),
  UP_ACCESS_TTL: String(ACCESS_TTL),
}, 'peer');

try {
  issuer = await peer.ready();

  // ---------------------------------------------------------- metadata ---
  const meta = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json();
  const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  check('RFC 8414 metadata: issuer', meta.issuer === issuer, meta.issuer);
  check('openid-configuration served too, same endpoints', disco.issuer === issuer && disco.token_endpoint === meta.token_endpoint);
  check('metadata: token, revocation, introspection endpoints', meta.token_endpoint === `${issuer}/token`
    && meta.revocation_endpoint === `${issuer}/token/revocation` && meta.introspection_endpoint === `${issuer}/token/introspection`, meta);
  check('metadata: all four grant types', ['authorization_code', 'refresh_token', JWT_BEARER, TOKEN_EXCHANGE]
    .every((g) => meta.grant_types_supported?.includes(g)), meta.grant_types_supported);
  check('metadata: S256 only, iss parameter', JSON.stringify(meta.code_challenge_methods_supported) === '["S256"]'
    && meta.authorization_response_iss_parameter_supported === true);
  check('metadata: basic, post, private_key_jwt', ['client_secret_basic', 'client_secret_post', 'private_key_jwt']
    .every((m) => meta.token_endpoint_auth_methods_supported.includes(m)));
  check('metadata: scopes', ['read', 'write', 'admin', 'offline_access', 'openid'].every((s) => meta.scopes_supported.includes(s)));

  const tokenUrl = meta.token_endpoint;
  const token = (client, params) => postForm(tokenUrl, client, params);
  const refresh = (client, rt, extra = {}) => token(client, { grant_type: 'refresh_token', refresh_token: rt, ...extra });
  const revoke = (client, value, hint) => postForm(meta.revocation_endpoint, client, { token: value, ...(hint ? { token_type_hint: hint } : {}) });
  const introspect = (client, value) => postForm(meta.introspection_endpoint, client, { token: value });
  const active = async (value) => (await postJson(`${issuer}/_test/active`, { token: value })).json;
  const stats = async () => (await fetch(`${issuer}/_test/stats`)).json();
  const fault = (body) => postJson(`${issuer}/_test/fault`, body);

  // Authorization code flow with PKCE; returns the token response.
  async function codeFlow(client, { scope = 'read write', loginHint = 'alice', label }) {
    const verifier = b64u(crypto.randomBytes(32));
    const state = b64u(crypto.randomBytes(12));
    const url = new URL(meta.authorization_endpoint);
    url.search = new URLSearchParams({
      client_id: client.client_id,
      response_type: 'code',
      redirect_uri: REDIRECT,
      scope,
      state,
      code_challenge: crypto.hash('sha256', verifier, 'base64url'),
      code_challenge_method: 'S256',
      ...(loginHint ? { login_hint: loginHint } : {}),
    });
    const flow = await follow(new CookieJar(), url.href);
    const q = flow.redirect?.searchParams;
    check(`${label}: redirected back with code, state and iss`, !!q?.get('code') && q.get('state') === state && q.get('iss') === issuer, flow);
    check(`${label}: only 302/303 hops`, flow.statuses.every((s) => s === 302 || s === 303), flow.statuses);
    return token(client, { grant_type: 'authorization_code', code: q?.get('code'), redirect_uri: REDIRECT, code_verifier: verifier });
  }

  // ----------------------------------------------------- code + refresh ---
  const c1 = await codeFlow(app, { label: 'code flow (basic)' });
  check('code flow: access + refresh token, no offline_access needed', c1.status === 200 && !!c1.json.access_token
    && !!c1.json.refresh_token && c1.json.token_type === 'Bearer', c1.json);
  check('code flow: scope and expires_in', c1.json.scope === 'read write' && c1.json.expires_in === ACCESS_TTL, c1.json);

  const r1 = await refresh(app, c1.json.refresh_token);
  check('refresh: 200 with a new access token', r1.status === 200 && !!r1.json.access_token && r1.json.access_token !== c1.json.access_token, r1.json);
  check('refresh: refresh token rotated', !!r1.json.refresh_token && r1.json.refresh_token !== c1.json.refresh_token, r1.json);
  const r2 = await refresh(app, r1.json.refresh_token, { scope: 'read' });
  check('refresh: down-scoping to read', r2.status === 200 && r2.json.scope === 'read', r2.json);
  const widen = await refresh(app, r2.json.refresh_token, { scope: 'read admin' });
  check('refresh: widening scope refused', widen.status === 400 && widen.json.error === 'invalid_scope', widen.json);

  // r2's refresh token was not consumed by the invalid_scope attempt; reuse r1's (consumed) one.
  const reuse = await refresh(app, r1.json.refresh_token);
  check('reuse of a rotated refresh token -> invalid_grant', reuse.status === 400 && reuse.json.error === 'invalid_grant', reuse.json);
  check('reuse: error_description says why', reuse.json?.error_description === 'refresh token already used', reuse.json);
  const after = await refresh(app, r2.json.refresh_token);
  check('reuse: the newest refresh token of the family is dead too', after.status === 400 && after.json.error === 'invalid_grant', after.json);
  check('reuse: family access token inactive at the AS', (await active(r2.json.access_token)).active === false);
  let s = await stats();
  check('stats: reuse_detected 1, refreshes 2', s.reuse_detected === 1 && s.refreshes === 2, s);
  check('stats: token_requests by grant type', s.token_requests.authorization_code === 1 && s.token_requests.refresh_token === 5, s.token_requests);
  check('stats: token_errors', s.token_errors.invalid_grant === 2 && s.token_errors.invalid_scope === 1, s.token_errors);

  // Two concurrent uses of one refresh token: one rotation, then a detected reuse.
  {
    const c = await codeFlow(app, { label: 'code flow for concurrency' });
    const both = await Promise.all([refresh(app, c.json.refresh_token), refresh(app, c.json.refresh_token)]);
    const ok = both.find((r) => r.status === 200);
    check('concurrent refreshes: one 200, one invalid_grant', !!ok && both.some((r) => r.json?.error === 'invalid_grant'), both.map((r) => r.json));
    check('concurrent refreshes: the family is revoked', ok && (await active(ok.json.refresh_token)).active === false);
  }

  // client_secret_post, account via /_test/next-login, plus openid.
  check('POST /_test/next-login', (await postJson(`${issuer}/_test/next-login`, { sub: 'bob' })).status === 200);
  const c2 = await codeFlow(appPost, { label: 'code flow (post, next-login)', loginHint: null, scope: 'openid read' });
  check('code flow (post): tokens incl. ID token for openid', c2.status === 200 && !!c2.json.refresh_token && !!c2.json.id_token, c2.json);
  const a2 = await active(c2.json.access_token);
  check('/_test/active: access token of bob', a2.active === true && a2.kind === 'AccessToken' && a2.sub === 'bob', a2);
  const a2r = await active(c2.json.refresh_token);
  check('/_test/active: refresh token', a2r.active === true && a2r.kind === 'RefreshToken' && a2r.sub === 'bob', a2r);
  const unknown = await active('not-a-token');
  check('/_test/active: unknown token', unknown.active === false && unknown.kind === null, unknown);

  // ---------------------------------------------- revocation/introspection ---
  const i1 = await introspect(appPost, c2.json.access_token);
  check('introspection: active with sub and scope', i1.status === 200 && i1.json.active === true && i1.json.sub === 'bob'
    && i1.json.scope === 'openid read', i1.json);
  const rv = await revoke(appPost, c2.json.refresh_token, 'refresh_token');
  check('RFC 7009 revocation of a refresh token: 200', rv.status === 200, rv);
  const rvRefresh = await refresh(appPost, c2.json.refresh_token);
  check('refresh after revocation -> invalid_grant', rvRefresh.status === 400 && rvRefresh.json.error === 'invalid_grant', rvRefresh.json);
  const i2 = await introspect(appPost, c2.json.access_token);
  check('revoking the refresh token revokes the grant (access token inactive)', i2.json?.active === false, i2.json);
  s = await stats();
  check('stats: revocations and revoked entry', s.revocations === 1 && s.revoked.length === 1
    && s.revoked[0].token_type_hint === 'refresh_token' && s.revoked[0].client_id === 'app-post' && typeof s.revoked[0].at === 'number', s);

  {
    const c3 = await codeFlow(app, { label: 'code flow for access token revocation' });
    const rva = await revoke(app, c3.json.access_token, 'access_token');
    check('revocation of an access token: 200, token inactive', rva.status === 200 && (await active(c3.json.access_token)).active === false);
    const rvaRefresh = await refresh(app, c3.json.refresh_token);
    check('revocation of an access token also ends the grant\'s refresh tokens', rvaRefresh.json?.error === 'invalid_grant', rvaRefresh.json);
  }

  // -------------------------------------------------------- jwt-bearer ---
  const jwtBearer = async (client, jag, scope) => token(client, { grant_type: JWT_BEARER, assertion: jag, ...(scope ? { scope } : {}) });
  const jb = await jwtBearer(app, await assertion({ scope: 'read write admin' }), 'read admin unknown');
  check('jwt-bearer: access token, Bearer, expires_in', jb.status === 200 && !!jb.json.access_token && jb.json.token_type === 'Bearer'
    && jb.json.expires_in === ACCESS_TTL, jb.json);
  check('jwt-bearer: no refresh token', jb.json && !('refresh_token' in jb.json), jb.json);
  check('jwt-bearer: scope = claim ∩ request', jb.json?.scope === 'read admin', jb.json);
  const jbActive = await active(jb.json.access_token);
  check('jwt-bearer: access token known to the AS for sub alice', jbActive.active && jbActive.sub === 'alice' && jbActive.kind === 'AccessToken', jbActive);
  const jbIntro = await introspect(app, jb.json.access_token);
  check('jwt-bearer: introspection sees it', jbIntro.json?.active === true && jbIntro.json.sub === 'alice', jbIntro.json);
  const crossBasic = await jwtBearer({ ...appPost, auth: 'basic' }, await assertion({ client_id: 'app-post' }));
  const crossPost = await jwtBearer({ ...app, auth: 'post' }, await assertion());
  check('secret clients: basic and post both accepted', crossBasic.status === 200 && crossPost.status === 200, [crossBasic.json, crossPost.json]);
  const jb2 = await jwtBearer(app, await assertion({ scope: 'read bogus' }));
  check('jwt-bearer: without scope parameter, claim ∩ known scopes', jb2.status === 200 && jb2.json.scope === 'read', jb2.json);

  const refusals = [
    ['wrong typ', { typ: 'JWT' }, /typ/],
    ['no typ', { typ: null }, /typ/],
    ['wrong aud', { aud: 'http://127.0.0.1:1/other' }, /aud/],
    ['aud array with this AS', { aud: ['http://x.example', '<issuer>'] }, null],
    ['wrong client_id', { client_id: 'app-post' }, /client_id/],
    ['expired', { exp: now() - 5, iat: now() - 300 }, /expired/],
    ['iat in the future', { iat: now() + 600 }, /iat/],
    ['no jti', { jti: undefined }, /jti/],
    ['no sub', { sub: undefined }, /sub/],
    ['unknown issuer', { iss: `${fakeBase}/orgs/evil` }, /not trusted/],
    ['bad signature', { key: rogueKey }, /signature/],
    ['unknown kid', { key: rogueKey, kid: 'nope' }, /key/],
  ];
  for (const [label, overrides, reason] of refusals) {
    if (Array.isArray(overrides.aud)) overrides.aud = overrides.aud.map((a) => (a === '<issuer>' ? issuer : a));
    const res = await jwtBearer(app, await assertion(overrides));
    if (reason === null) {
      check(`ID-JAG ${label} accepted`, res.status === 200, res.json);
    } else {
      check(`ID-JAG ${label} -> invalid_grant`, res.status === 400 && res.json?.error === 'invalid_grant'
        && reason.test(res.json.error_description ?? ''), res.json);
    }
  }
  const once1 = await assertion();
  const first = await jwtBearer(app, once1);
  const replay = await jwtBearer(app, once1);
  check('ID-JAG replayed jti -> invalid_grant', first.status === 200 && replay.status === 400 && replay.json.error === 'invalid_grant'
    && /jti/.test(replay.json.error_description), replay.json);
  // The trusted issuer rotates its key: the new kid is fetched, the removed one no longer verifies.
  {
    const newKey = await generateKeyPair('ES256', { extractable: true });
    documents['/orgs/acme/jwks.json'] = { keys: [await publicJwk(newKey, 'acme-2')] };
    await new Promise((r) => { setTimeout(r, 1100); });
    const rotated = await jwtBearer(app, await assertion({ key: newKey, kid: 'acme-2' }));
    check('issuer key rotation: new kid accepted', rotated.status === 200, rotated.json);
    const retired = await jwtBearer(app, await assertion());
    check('issuer key rotation: removed key refused', retired.status === 400 && retired.json.error === 'invalid_grant', retired.json);
    documents['/orgs/acme/jwks.json'].keys.push(await publicJwk(issuerKey, ISSUER_KID));
    await new Promise((r) => { setTimeout(r, 1100); });
  }
  const noAssertion = await token(app, { grant_type: JWT_BEARER });
  check('jwt-bearer without assertion -> invalid_request', noAssertion.status === 400 && noAssertion.json.error === 'invalid_request', noAssertion.json);

  // --------------------------------------------------- token exchange ---
  const exchange = (client, subjectToken, type = TT_JWT, extra = {}) => token(client, {
    grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: type, ...extra,
  });
  const te = await exchange(app, await assertion({ typ: 'JWT', client_id: undefined, scope: 'read write' }), TT_JWT, {
    scope: 'read', requested_token_type: 'urn:ietf:params:oauth:token-type:access_token', audience: 'api',
  });
  check('token exchange: access + refresh token', te.status === 200 && !!te.json.access_token && !!te.json.refresh_token
    && te.json.issued_token_type === 'urn:ietf:params:oauth:token-type:access_token' && te.json.token_type === 'Bearer'
    && te.json.expires_in === ACCESS_TTL && te.json.scope === 'read', te.json);
  const teR = await refresh(app, te.json.refresh_token);
  check('token exchange: its refresh token works and rotates', teR.status === 200 && teR.json.scope === 'read'
    && !!teR.json.refresh_token && teR.json.refresh_token !== te.json.refresh_token, teR.json);
  const teReuse = await refresh(app, te.json.refresh_token);
  const teAfter = await refresh(app, teR.json.refresh_token);
  check('token exchange: reuse revokes its family too', teReuse.json?.error === 'invalid_grant' && teAfter.json?.error === 'invalid_grant', { teReuse: teReuse.json, teAfter: teAfter.json });
  const teId = await exchange(appPost, await assertion({ typ: null, client_id: undefined, scope: undefined }), TT_ID_TOKEN, { scope: 'write bogus' });
  check('token exchange: id_token type, no typ, scope from request', teId.status === 200 && teId.json.scope === 'write', teId.json);
  const teJag = await exchange(app, await assertion());
  check('token exchange: typ oauth-id-jag+jwt refused', teJag.status === 400 && teJag.json.error === 'invalid_grant', teJag.json);
  const teAud = await exchange(app, await assertion({ typ: 'JWT', aud: 'someone-else' }));
  check('token exchange: wrong aud refused', teAud.status === 400 && teAud.json.error === 'invalid_grant', teAud.json);
  const teType = await exchange(app, await assertion({ typ: 'JWT' }), 'urn:ietf:params:oauth:token-type:saml2');
  check('token exchange: unsupported subject_token_type -> invalid_request', teType.status === 400 && teType.json.error === 'invalid_request', teType.json);
  const teTok = await assertion({ typ: 'JWT' });
  await exchange(app, teTok);
  const teReplay = await exchange(app, teTok);
  check('token exchange: replayed jti refused', teReplay.status === 400 && /jti/.test(teReplay.json.error_description), teReplay.json);
  s = await stats();
  check('stats: jwt_bearer and token_exchange successes', s.jwt_bearer === 7 && s.token_exchange === 3, s);

  // ------------------------------------------------------------ faults ---
  await postJson(`${issuer}/_test/stats/reset`);
  s = await stats();
  check('POST /_test/stats/reset zeroes', s.faults_applied === 0 && s.refreshes === 0 && Object.keys(s.token_requests).length === 0, s);

  let rt = (await codeFlow(app, { label: 'code flow for faults' })).json.refresh_token;
  const step = async (label, res, ok) => {
    check(label, ok(res), { status: res.status, json: res.json });
    if (res.status === 200 && res.json?.refresh_token) rt = res.json.refresh_token;
  };

  check('fault: bad mode -> 400', (await fault({ mode: 'explode' })).status === 400);
  await fault({ mode: 'slow', ms: 600, count: 1 });
  await step('fault slow: delayed, then handled normally', await refresh(app, rt), (r) => r.status === 200 && r.ms >= 550);
  await step('fault slow: count 1 only', await refresh(app, rt), (r) => r.status === 200 && r.ms < 550);

  await fault({ mode: 'error500', count: 1 });
  await step('fault error500: 500 server_error', await refresh(app, rt), (r) => r.status === 500 && r.json?.error === 'server_error');
  await step('fault error500: provider state untouched', await refresh(app, rt), (r) => r.status === 200);

  await fault({ mode: 'invalid_grant', count: 1 });
  await step('fault invalid_grant: injected', await refresh(app, rt), (r) => r.status === 400 && r.json?.error === 'invalid_grant'
    && r.json.error_description === 'injected');
  check('fault invalid_grant: refresh token still active', (await active(rt)).active === true);

  await fault({ mode: 'rate_limited', count: 1 });
  await step('fault rate_limited: 429 slow_down, Retry-After 1', await refresh(app, rt), (r) => r.status === 429
    && r.json?.error === 'slow_down' && r.headers.get('retry-after') === '1');

  await fault({ mode: 'drop_expires_in', count: 1 });
  await step('fault drop_expires_in: no expires_in, rest intact', await refresh(app, rt), (r) => r.status === 200
    && !('expires_in' in r.json) && !!r.json.access_token && !!r.json.refresh_token
    && Number(r.headers.get('content-length')) === Buffer.byteLength(JSON.stringify(r.json)));

  await fault({ mode: 'drop_refresh_token', count: 1 });
  const beforeDrop = rt;
  const dropped = await refresh(app, rt);
  check('fault drop_refresh_token: 200 without refresh_token', dropped.status === 200 && !!dropped.json.access_token
    && !('refresh_token' in dropped.json), dropped.json);
  const oldState = await active(beforeDrop);
  check('fault drop_refresh_token: the AS rotated anyway (old one consumed)', oldState.active === false && oldState.consumed === true, oldState);
  const stale = await refresh(app, beforeDrop);
  check('fault drop_refresh_token: presenting the old one is reuse -> invalid_grant', stale.status === 400 && stale.json.error === 'invalid_grant', stale.json);

  rt = (await codeFlow(app, { label: 'code flow for revocation faults' })).json.refresh_token;
  await fault({ mode: 'unavailable', path: 'revocation', count: 1 });
  const down = await revoke(app, rt, 'refresh_token');
  check('fault unavailable on revocation: 503 temporarily_unavailable', down.status === 503 && down.json?.error === 'temporarily_unavailable', down);
  check('fault unavailable on revocation: token endpoint unaffected, token still active',
    (await active(rt)).active === true && (await refresh(app, rt)).status === 200);

  const sticky = await fault({ mode: 'error500' });
  check('fault without count is sticky', sticky.json.remaining === null && (await refresh(app, 'x')).status === 500
    && (await refresh(app, 'x')).status === 500);
  await fault({ mode: 'none' });
  check('fault none clears', (await refresh(app, 'x')).status === 400);

  s = await stats();
  check('stats: faults_applied counts every application', s.faults_applied === 9, s.faults_applied);
  check('stats: revocations only count requests the provider answered', s.revocations === 0, s);
  check('stats: injected answers appear in token_errors', s.token_errors.server_error === 3 && s.token_errors.slow_down === 1, s.token_errors);

  // --------------------------------------------------- private_key_jwt ---
  const pk = await codeFlow(pkj, { label: 'code flow (private_key_jwt)' });
  check('private_key_jwt: code exchanged', pk.status === 200 && !!pk.json.refresh_token, pk.json);
  const pkr = await refresh(pkj, pk.json.refresh_token);
  check('private_key_jwt: refresh', pkr.status === 200, pkr.json);
  const pkJag = await jwtBearer(pkj, await assertion({ client_id: 'pkj' }));
  check('private_key_jwt: ID-JAG for that client', pkJag.status === 200 && pkJag.json.scope === 'read write', pkJag.json);
  const pkBad = await refresh({ ...pkj, assertion: clientAssertion(rogueKey, 'pkj-1') }, pkr.json.refresh_token);
  check('private_key_jwt: assertion with the wrong key -> invalid_client', pkBad.status === 401 && pkBad.json.error === 'invalid_client', pkBad.json);
  const wrongSecret = await refresh({ ...app, client_secret: 'nope' }, 'x');
  check('wrong client secret -> invalid_client', wrongSecret.status === 401 && wrongSecret.json.error === 'invalid_client', wrongSecret.json);
} catch (err) {
  check('selftest ran without exceptions', false, err.stack ?? String(err));
} finally {
  await peer.stop();
  fake.close();
  for (const [label, env] of [['invalid UP_CLIENTS JSON', { UP_CLIENTS: 'nope' }], ['private_key_jwt without jwks_uri',
    { UP_CLIENTS: '[{"client_id":"x","redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"private_key_jwt"}]' }],
  ['client metadata oidc-provider rejects', { UP_CLIENTS: '[{"client_id":"x","client_secret":"s","redirect_uris":["not a url"]}]' }]]) {
    const bad = spawn(process.execPath, [peerPath], { env: { ...process.env, UP_PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    bad.stdout.on('data', (d) => { out += d; });
    const [code] = await once(bad, 'exit');
    check(`bad config (${label}) exits 2 without a ready line`, code === 2 && out === '', { code, out });
  }
  finish(peer);
}
