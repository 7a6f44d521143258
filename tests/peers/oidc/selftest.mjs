// End-to-end self-test of the OIDC test peer.
//   node tests/peers/oidc/selftest.mjs     (exit 0 = all checks passed)
//
// Starts provider.mjs, then drives it like a test HTTP client would: fetch
// with manual redirects and a small path-aware cookie jar. The helpers shared
// with upstream-selftest.mjs are in selftest-common.mjs; the refresh-token and
// ID-JAG (token exchange) checks, which also start upstream.mjs, are in
// selftest-id-jag.mjs.

import * as crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

import {
  CookieJar, REDIRECT, b64u, check, finish, follow, postJson, startPeer,
} from './selftest-common.mjs';
import { ID_JAG_AUDIENCES, XAA_CLIENT, runIdJagChecks } from './selftest-id-jag.mjs';

const providerPath = fileURLToPath(new URL('./provider.mjs', import.meta.url));
const CLIENTS = [
  { client_id: 'rp', client_secret: 'rp-secret', redirect_uris: [REDIRECT] },
  { client_id: 'rp-rs', client_secret: 'rp-rs-secret', redirect_uris: [REDIRECT], id_token_signed_response_alg: 'RS256' },
  XAA_CLIENT,
];
const ACCOUNTS = {
  u1: { email: 'ann@acme.example', email_verified: true, name: 'Ann', groups: ['Engineering'] },
  u2: { email: 'bob@acme.example', email_verified: false, name: 'Bob', groups: ['Sales', 'Ops'] },
};

// -------------------------------------------------------------- helpers ---
const decodePayload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

function authUrl(disco, clientId, { pkce = true, loginHint, scope = 'openid email profile groups' } = {}) {
  const verifier = b64u(crypto.randomBytes(32));
  const state = b64u(crypto.randomBytes(12));
  const nonce = b64u(crypto.randomBytes(12));
  const url = new URL(disco.authorization_endpoint);
  url.searchParams.set('client_id', clientId);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('redirect_uri', REDIRECT);
  url.searchParams.set('scope', scope);
  url.searchParams.set('state', state);
  url.searchParams.set('nonce', nonce);
  if (pkce) {
    url.searchParams.set('code_challenge', crypto.hash('sha256', verifier, 'base64url'));
    url.searchParams.set('code_challenge_method', 'S256');
  }
  if (loginHint) url.searchParams.set('login_hint', loginHint);
  return { url: url.href, verifier, state, nonce };
}

async function token(disco, client, code, verifier, method = 'basic') {
  const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier });
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (method === 'basic') {
    const enc = (s) => encodeURIComponent(s);
    headers.authorization = `Basic ${Buffer.from(`${enc(client.client_id)}:${enc(client.client_secret)}`).toString('base64')}`;
  } else {
    body.set('client_id', client.client_id);
    body.set('client_secret', client.client_secret);
  }
  const res = await fetch(disco.token_endpoint, { method: 'POST', headers, body });
  return { status: res.status, json: await res.json() };
}

async function jwks(disco) {
  return (await (await fetch(disco.jwks_uri)).json()).keys;
}

// Full login: returns the decoded ID token and verification facts.
async function login(disco, jar, client, { loginHint, tokenAuth = 'basic', label, scope }) {
  const req = authUrl(disco, client.client_id, { loginHint, scope });
  const flow = await follow(jar, req.url);
  if (!flow.redirect) {
    check(`${label}: redirected back to the client`, false, { hops: flow.hops, body: flow.body });
    return undefined;
  }
  const q = flow.redirect.searchParams;
  check(`${label}: state echoed`, q.get('state') === req.state);
  check(`${label}: iss in authorization response (RFC 9207)`, q.get('iss') === disco.issuer, q.get('iss'));
  check(`${label}: code present`, !!q.get('code'), flow.redirect.href);
  const tok = await token(disco, client, q.get('code'), req.verifier, tokenAuth);
  check(`${label}: token endpoint 200 (${tokenAuth})`, tok.status === 200, tok.json);
  const idToken = tok.json.id_token;
  const header = decodeProtectedHeader(idToken);
  const claims = decodePayload(idToken);
  // Fresh JWKS fetch each time (no caching across rotations).
  const keySet = createRemoteJWKSet(new URL(disco.jwks_uri), { cacheMaxAge: 0, cooldownDuration: 0 });
  let verified = false;
  try {
    await jwtVerify(idToken, keySet, { issuer: disco.issuer, audience: client.client_id });
    verified = true;
  } catch (err) {
    verified = err.message;
  }
  check(`${label}: ID token signature verifies against JWKS`, verified === true, verified);
  check(`${label}: nonce`, claims.nonce === req.nonce);
  check(`${label}: iss/aud`, claims.iss === disco.issuer && claims.aud === client.client_id, claims);
  check(`${label}: kid in header`, typeof header.kid === 'string' && header.kid.length > 0, header);
  return {
    header, claims, hops: flow.hops, code: q.get('code'), verifier: req.verifier, tokens: tok.json,
  };
}

// ----------------------------------------------------------------- main ---
const peer = startPeer(providerPath, {
  OP_PORT: '0',
  OP_CLIENTS: JSON.stringify(CLIENTS),
  OP_ACCOUNTS: JSON.stringify(ACCOUNTS),
  OP_ID_JAG_AUDIENCES: JSON.stringify(ID_JAG_AUDIENCES),
}, 'provider');

try {
  const issuer = await peer.ready();

  const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  check('discovery issuer', disco.issuer === issuer, disco.issuer);
  check('discovery advertises RFC 9207', disco.authorization_response_iss_parameter_supported === true);
  check('discovery: S256 only', JSON.stringify(disco.code_challenge_methods_supported) === '["S256"]');
  check('discovery: ES256 and RS256 ID tokens', ['ES256', 'RS256'].every((a) => disco.id_token_signing_alg_values_supported.includes(a)));
  check('discovery: basic and post client auth', ['client_secret_basic', 'client_secret_post'].every((a) => disco.token_endpoint_auth_methods_supported.includes(a)));

  const [rp, rpRs] = CLIENTS;

  // No login_hint and no next-login -> 400 at the interaction URL.
  {
    const jar = new CookieJar();
    const flow = await follow(jar, authUrl(disco, rp.client_id).url);
    check('no account chosen -> interaction answers 400', flow.final?.status === 400 && flow.body.includes('no_test_account'), { hops: flow.hops, body: flow.body });
  }

  // Request without PKCE is refused (error redirected to the client).
  {
    const jar = new CookieJar();
    const flow = await follow(jar, authUrl(disco, rp.client_id, { pkce: false, loginHint: 'u1' }).url);
    const q = flow.redirect?.searchParams;
    check('no PKCE -> error=invalid_request redirected to client', q?.get('error') === 'invalid_request' && !q.get('code'), flow.redirect?.href ?? flow);
    check('no PKCE -> error response carries iss', q?.get('iss') === issuer);
  }

  // Flow 1: account from POST /_test/next-login, client_secret_basic, ES256.
  const nl = await postJson(`${issuer}/_test/next-login`, { sub: 'u1' });
  check('POST /_test/next-login', nl.status === 200, nl);
  const badNl = await postJson(`${issuer}/_test/next-login`, { sub: 'nobody' });
  check('POST /_test/next-login unknown sub -> 400', badNl.status === 400, badNl);
  const jar1 = new CookieJar();
  const t1 = await login(disco, jar1, rp, { label: 'flow1' });
  console.log(`     flow1 hops: ${t1?.hops.join(' -> ')} -> 303 to client`);
  console.log(`     cookies after flow1: ${jar1.names().join(', ')}`);
  check('flow1: sub u1', t1?.claims.sub === 'u1', t1?.claims);
  check('flow1: email/name/groups in ID token', t1?.claims.email === 'ann@acme.example' && t1.claims.name === 'Ann'
    && JSON.stringify(t1.claims.groups) === '["Engineering"]' && t1.claims.email_verified === true, t1?.claims);
  check('flow1: alg ES256', t1?.header.alg === 'ES256', t1?.header);
  check('flow1: ID token lifetime 300 s', t1?.claims.exp - t1?.claims.iat === 300, t1?.claims);
  console.log(`     flow1 ID token header: ${JSON.stringify(t1?.header)}`);
  console.log(`     flow1 ID token payload: ${JSON.stringify(t1?.claims)}`);
  const keys1 = await jwks(disco);
  check('flow1: kid published in JWKS', keys1.some((k) => k.kid === t1?.header.kid));

  // Code replay and wrong verifier are refused.
  {
    const again = await token(disco, rp, t1.code, t1.verifier);
    check('code replay -> invalid_grant', again.status === 400 && again.json.error === 'invalid_grant', again);
    const req = authUrl(disco, rp.client_id, { loginHint: 'u1' });
    const flow = await follow(new CookieJar(), req.url);
    const bad = await token(disco, rp, flow.redirect.searchParams.get('code'), b64u(crypto.randomBytes(32)));
    check('wrong code_verifier -> invalid_grant', bad.status === 400 && bad.json.error === 'invalid_grant', bad);
  }

  // client_secret_post + RS256 client, account via login_hint.
  const t2 = await login(disco, new CookieJar(), rpRs, { label: 'rs256/post', loginHint: 'u2', tokenAuth: 'post' });
  check('rs256/post: alg RS256 and sub u2', t2?.header.alg === 'RS256' && t2.claims.sub === 'u2', { h: t2?.header, c: t2?.claims });
  check('rs256/post: groups', JSON.stringify(t2?.claims.groups) === '["Sales","Ops"]', t2?.claims);

  // Rotation.
  const rot = await postJson(`${issuer}/_test/rotate-keys`, {});
  check('POST /_test/rotate-keys returns new kid', rot.status === 200 && typeof rot.json.kid === 'string' && rot.json.kid !== t1?.header.kid, rot);
  const keys2 = await jwks(disco);
  check('new kid published', keys2.some((k) => k.kid === rot.json.kid));
  check('old kid still published', keys2.some((k) => k.kid === t1?.header.kid));

  // Flow 2: same browser (jar1, session for u1), switch to u2 via login_hint.
  const t3 = await login(disco, jar1, rp, { label: 'after-rotation', loginHint: 'u2' });
  console.log(`     after-rotation hops: ${t3?.hops.join(' -> ')} -> 303 to client`);
  check('after-rotation: kid differs from before', t3 && t3.header.kid !== t1?.header.kid, t3?.header);
  check('after-rotation: kid is the rotated one', t3?.header.kid === rot.json.kid, { got: t3?.header.kid, want: rot.json.kid });
  check('after-rotation: account switched to u2 in the same jar', t3?.claims.sub === 'u2' && t3.claims.email === 'bob@acme.example', t3?.claims);

  // Flow 3: same jar and account again -> no interaction at all.
  const t4 = await login(disco, jar1, rp, { label: 'reuse-session', loginHint: 'u2' });
  check('reuse-session: straight redirect, no interaction', t4?.hops.length === 1, t4?.hops);
  check('reuse-session: sub u2', t4?.claims.sub === 'u2');

  // In-flight across rotation: stop at the interaction URL, rotate, continue.
  {
    const jar = new CookieJar();
    const req = authUrl(disco, rp.client_id, { loginHint: 'u1' });
    const first = await follow(jar, req.url, { stopAt: (u) => new URL(u).pathname.startsWith('/interaction/') });
    const interactionUrl = first.redirect?.href;
    check('in-flight: stopped at interaction URL', !!interactionUrl && interactionUrl.includes('/interaction/'), first);
    const rot2 = await postJson(`${issuer}/_test/rotate-keys`, {});
    const rest = await follow(jar, interactionUrl);
    const code = rest.redirect?.searchParams.get('code');
    check('in-flight: interaction survives rotation', !!code, rest);
    const tok = await token(disco, rp, code, req.verifier);
    const kid = tok.json.id_token && decodeProtectedHeader(tok.json.id_token).kid;
    check('in-flight: ID token signed with the newest kid', tok.status === 200 && kid === rot2.json.kid, { tok, want: rot2.json.kid });
  }

  // Code issued before rotation, redeemed after.
  {
    const jar = new CookieJar();
    const req = authUrl(disco, rp.client_id, { loginHint: 'u1' });
    const flow = await follow(jar, req.url);
    const rot3 = await postJson(`${issuer}/_test/rotate-keys`, { keep_old: false });
    const tok = await token(disco, rp, flow.redirect.searchParams.get('code'), req.verifier);
    const kid = tok.json.id_token && decodeProtectedHeader(tok.json.id_token).kid;
    check('code minted before rotation redeems after it, signed with new kid', tok.status === 200 && kid === rot3.json.kid, tok);
    const keys3 = await jwks(disco);
    check('keep_old:false leaves only the current keys', keys3.length === 2 && keys3.some((k) => k.kid === rot3.json.kid), keys3.map((k) => k.kid));
  }

  // Refresh tokens, ID-JAG token exchange, and upstream.mjs redeeming the ID-JAGs.
  await runIdJagChecks({ issuer, disco, login, rp });
} catch (err) {
  check('selftest ran without exceptions', false, err.stack ?? String(err));
} finally {
  await peer.stop();
  finish(peer);
}
