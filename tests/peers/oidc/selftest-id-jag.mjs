// Self-test of provider.mjs's refresh tokens and ID-JAG token exchange (the
// Cross App Access IdP side), run by selftest.mjs against its started peer:
//
//   - offline_access -> refresh token; refresh -> new ID token (same sub and
//     claims) and a rotated refresh token; a replayed one is invalid_grant
//   - token exchange of an ID token for an ID-JAG: response, header, claims,
//     signature against /jwks; every refusal; POST /_test/disable; the counters
//   - upstream.mjs redeems the ID-JAG at its jwt-bearer grant when it trusts
//     this IdP, and refuses it when it does not (two upstream.mjs processes)

import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  SignJWT, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, generateKeyPair, jwtVerify,
} from 'jose';

import {
  CookieJar, REDIRECT, check, follow, postJson, startPeer,
} from './selftest-common.mjs';

const upstreamPath = fileURLToPath(new URL('./upstream.mjs', import.meta.url));
const providerPath = fileURLToPath(new URL('./provider.mjs', import.meta.url));

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TT_ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const TT_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const TT_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

// The RP that signs in with refresh tokens and exchanges ID tokens (every
// client may use the token-exchange grant; refresh_token is opt-in).
export const XAA_CLIENT = {
  client_id: 'rp-xaa',
  client_secret: 'rp-xaa-secret',
  redirect_uris: [REDIRECT],
  grant_types: ['authorization_code', 'refresh_token'],
};

// OP_ID_JAG_AUDIENCES at start-up (the upstream.mjs audiences are added later
// with POST /_test/id-jag-audiences, once their issuers are known).
const AS_A = 'https://as-a.example';
const AS_B = 'https://as-b.example/tenant';
export const ID_JAG_AUDIENCES = {
  [AS_A]: { client_id: 'rp-at-a', scopes: ['read', 'write'] },
  [AS_B]: { client_id: 'rp-at-b' },
};

const SIGN_IN_SCOPE = 'openid email profile groups offline_access';
const SAME_CLAIMS = ['sub', 'email', 'email_verified', 'name', 'groups', 'iss', 'aud', 'auth_time', 'nonce'];

const form = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined));
const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

// POST to a token endpoint; auth 'basic' (default), 'post' or 'none'.
async function tokenRequest(url, client, params, auth = 'basic') {
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  const body = form(params);
  if (auth === 'basic') headers.authorization = basic(client.client_id, client.client_secret);
  if (auth === 'post') {
    body.set('client_id', client.client_id);
    body.set('client_secret', client.client_secret);
  }
  const res = await fetch(url, { method: 'POST', headers, body });
  return { status: res.status, json: await res.json() };
}

const isError = (r, status, error, descriptionPart) => r.status === status && r.json.error === error
  && (descriptionPart === undefined || String(r.json.error_description).includes(descriptionPart));

export async function runIdJagChecks({
  issuer, disco, login, rp,
}) {
  const xaa = XAA_CLIENT;
  const keySet = () => createRemoteJWKSet(new URL(disco.jwks_uri), { cacheMaxAge: 0, cooldownDuration: 0 });
  const signIn = (client, label, loginHint = 'u1', jar = new CookieJar()) => login(disco, jar, client, { label, loginHint, scope: SIGN_IN_SCOPE });
  const refresh = (rt, auth) => tokenRequest(disco.token_endpoint, xaa, { grant_type: 'refresh_token', refresh_token: rt }, auth);
  let issued = 0;
  let refused = 0;
  const exchange = async (params, { client = xaa, auth = 'basic' } = {}) => {
    const r = await tokenRequest(disco.token_endpoint, client, {
      grant_type: TOKEN_EXCHANGE, requested_token_type: TT_ID_JAG, subject_token_type: TT_ID_TOKEN, ...params,
    }, auth);
    if (r.status === 200) issued += 1;
    else refused += 1;
    return r;
  };

  check('discovery: refresh_token and token-exchange grants, offline_access scope', ['refresh_token', TOKEN_EXCHANGE]
    .every((g) => disco.grant_types_supported.includes(g)) && disco.scopes_supported.includes('offline_access'), disco.grant_types_supported);
  for (const bad of ['[]', '{"https://as.example":{"scopes":["read"]}}', '{"https://as.example":{"client_id":"c","scopes":"read"}}']) {
    const run = spawnSync(process.execPath, [providerPath], {
      env: { ...process.env, OP_PORT: '0', OP_ID_JAG_AUDIENCES: bad }, encoding: 'utf8', timeout: 15_000,
    });
    check(`bad OP_ID_JAG_AUDIENCES ${bad} -> exit 2, no ready line`, run.status === 2 && run.stdout === '', { status: run.status, stderr: run.stderr });
  }

  // ------------------------------------------------------ refresh tokens ---
  const jar = new CookieJar();
  const s1 = await signIn(xaa, 'offline', 'u1', jar);
  const rt1 = s1?.tokens.refresh_token;
  check('offline: offline_access without prompt=consent -> refresh token', typeof rt1 === 'string' && rt1.length > 0, s1?.tokens);
  check('offline: granted scope includes offline_access', s1?.tokens.scope?.split(' ').includes('offline_access'), s1?.tokens.scope);
  const r1 = await refresh(rt1);
  const c1 = r1.json.id_token && decodeJwt(r1.json.id_token);
  check('refresh: 200 with access token, ID token and a new refresh token', r1.status === 200 && !!r1.json.access_token && !!c1
    && typeof r1.json.refresh_token === 'string' && r1.json.refresh_token !== rt1, r1);
  let verified;
  try {
    await jwtVerify(r1.json.id_token, keySet(), { issuer, audience: xaa.client_id });
    verified = true;
  } catch (err) {
    verified = err.message;
  }
  check('refresh: new ID token verifies against JWKS', verified === true, verified);
  check('refresh: same sub and claims as at sign-in', c1 && SAME_CLAIMS.every((k) => JSON.stringify(c1[k]) === JSON.stringify(s1.claims[k])), { signIn: s1?.claims, refresh: c1 });
  check('refresh: a new ID token (not the sign-in one, iat not earlier)', c1 && r1.json.id_token !== s1.tokens.id_token && c1.iat >= s1.claims.iat, c1);
  console.log(`     refreshed ID token payload: ${JSON.stringify(c1)}`);
  const r2 = await refresh(r1.json.refresh_token, 'post');
  check('refresh again with the rotated token (client_secret_post)', r2.status === 200 && !!r2.json.id_token && r2.json.refresh_token !== r1.json.refresh_token, r2);
  const replay = await refresh(rt1);
  check('refresh: reused (rotated-away) refresh token -> invalid_grant "refresh token already used"', isError(replay, 400, 'invalid_grant', 'refresh token already used'), replay);
  const after = await refresh(r2.json.refresh_token);
  check('refresh: reuse revoked the grant, the newest refresh token is refused too', isError(after, 400, 'invalid_grant'), after);

  const s2 = await signIn(xaa, 'offline-again', 'u1', jar);
  check('offline: same browser session -> consent round trip, still a refresh token', !!s2?.tokens.refresh_token && s2.hops.some((h) => h.includes('/interaction/')), s2?.hops);
  const sRp = await signIn(rp, 'offline-no-grant', 'u1');
  check('offline: client without the refresh_token grant gets no refresh token', sRp && !sRp.tokens.refresh_token, sRp?.tokens);

  const rot = await postJson(`${issuer}/_test/rotate-keys`, {});
  const r3 = await refresh(s2.tokens.refresh_token);
  check('refresh after key rotation: ID token signed with the new kid', r3.status === 200 && decodeProtectedHeader(r3.json.id_token).kid === rot.json.kid, r3);

  // ------------------------------------------------------ token exchange ---
  const sub = await signIn(xaa, 'xaa sign-in', 'u1');
  const idToken = sub?.tokens.id_token;
  const ok = await exchange({ subject_token: idToken, audience: AS_A, scope: 'read write admin', resource: 'https://api.a.example/v1' });
  check('exchange: 200 {access_token, issued_token_type id-jag, token_type N_A, expires_in 300, scope}', ok.status === 200
    && typeof ok.json.access_token === 'string' && ok.json.issued_token_type === TT_ID_JAG && ok.json.token_type === 'N_A'
    && ok.json.expires_in === 300 && ok.json.scope === 'read write' && !ok.json.refresh_token, ok);
  const jag = ok.json.access_token;
  const header = jag && decodeProtectedHeader(jag);
  const claims = jag && decodeJwt(jag);
  console.log(`     ID-JAG header: ${JSON.stringify(header)}`);
  console.log(`     ID-JAG payload: ${JSON.stringify(claims)}`);
  const published = (await (await fetch(disco.jwks_uri)).json()).keys;
  check('ID-JAG header: alg ES256, typ oauth-id-jag+jwt, current ES256 kid (in /jwks)', header?.alg === 'ES256' && header.typ === 'oauth-id-jag+jwt'
    && header.kid === rot.json.kids.ES256 && published.some((k) => k.kid === header.kid), header);
  check('ID-JAG claims: iss, sub, aud, client_id, jti, iat, exp=iat+300, scope, resource, email', claims?.iss === issuer && claims.sub === 'u1'
    && claims.aud === AS_A && claims.client_id === 'rp-at-a' && typeof claims.jti === 'string' && claims.jti.length >= 16
    && Number.isInteger(claims.iat) && claims.exp === claims.iat + 300 && claims.scope === 'read write'
    && claims.resource === 'https://api.a.example/v1' && claims.email === 'ann@acme.example', claims);
  let jagVerified;
  try {
    await jwtVerify(jag, keySet(), { issuer, audience: AS_A, typ: 'oauth-id-jag+jwt', algorithms: ['ES256'] });
    jagVerified = true;
  } catch (err) {
    jagVerified = err.message;
  }
  check('ID-JAG verifies against the provider /jwks', jagVerified === true, jagVerified);

  const plain = await exchange({ subject_token: idToken, audience: AS_B }, { auth: 'post' });
  const plainClaims = plain.json.access_token && decodeJwt(plain.json.access_token);
  check('exchange (client_secret_post, no scope): no scope in answer or ID-JAG', plain.status === 200 && !('scope' in plain.json)
    && plainClaims && !('scope' in plainClaims) && !('resource' in plainClaims) && plainClaims.client_id === 'rp-at-b', plain);
  check('exchange: a fresh jti each time', plainClaims && plainClaims.jti !== claims?.jti);
  const free = await exchange({ subject_token: idToken, audience: AS_B, scope: 'x y' });
  check('exchange: audience without a scope list passes requested scopes', free.status === 200 && free.json.scope === 'x y'
    && decodeJwt(free.json.access_token).scope === 'x y', free);
  const s3 = await signIn(xaa, 'xaa u2', 'u2');
  const u2 = await exchange({ subject_token: s3?.tokens.id_token, audience: AS_A });
  check('exchange for u2: sub u2, email of u2', u2.status === 200 && decodeJwt(u2.json.access_token).sub === 'u2'
    && decodeJwt(u2.json.access_token).email === 'bob@acme.example', u2);

  // Refusals.
  const wrongRtt = await exchange({ subject_token: idToken, audience: AS_A, requested_token_type: TT_ACCESS_TOKEN });
  check('refused: requested_token_type access_token -> invalid_request', isError(wrongRtt, 400, 'invalid_request', 'requested_token_type'), wrongRtt);
  const noRtt = await exchange({ subject_token: idToken, audience: AS_A, requested_token_type: undefined });
  check('refused: no requested_token_type -> invalid_request', isError(noRtt, 400, 'invalid_request', 'requested_token_type'), noRtt);
  const wrongStt = await exchange({ subject_token: idToken, audience: AS_A, subject_token_type: TT_ACCESS_TOKEN });
  check('refused: subject_token_type access_token -> invalid_grant', isError(wrongStt, 400, 'invalid_grant', 'subject_token_type'), wrongStt);
  const noAud = await exchange({ subject_token: idToken });
  check('refused: no audience -> invalid_request', isError(noAud, 400, 'invalid_request', 'audience'), noAud);
  const garbled = await exchange({ subject_token: 'not.a-jwt', audience: AS_A });
  check('refused: garbled subject token -> invalid_grant', isError(garbled, 400, 'invalid_grant', 'not a JWT'), garbled);
  {
    // Same header (kid) and claims, signed with a key the provider never had.
    const { privateKey } = await generateKeyPair('ES256');
    const forgedToken = await new SignJWT(decodeJwt(idToken)).setProtectedHeader(decodeProtectedHeader(idToken)).sign(privateKey);
    const forged = await exchange({ subject_token: forgedToken, audience: AS_A });
    check('refused: forged subject token (right kid, wrong key) -> invalid_grant', isError(forged, 400, 'invalid_grant', 'signature'), forged);
    const tampered = idToken.split('.');
    tampered[1] = Buffer.from(JSON.stringify({ ...decodeJwt(idToken), sub: 'u2' })).toString('base64url');
    const bad = await exchange({ subject_token: tampered.join('.'), audience: AS_A });
    check('refused: tampered subject token (sub changed) -> invalid_grant', isError(bad, 400, 'invalid_grant', 'signature'), bad);
    const unknownKid = await new SignJWT(decodeJwt(idToken)).setProtectedHeader({ alg: 'ES256', kid: 'nope' }).sign(privateKey);
    const nk = await exchange({ subject_token: unknownKid, audience: AS_A });
    check('refused: subject token with an unknown kid -> invalid_grant', isError(nk, 400, 'invalid_grant', 'kid'), nk);
  }
  const rpSignIn = await login(disco, new CookieJar(), rp, { label: 'rp sign-in', loginHint: 'u1' });
  const otherClient = await exchange({ subject_token: rpSignIn?.tokens.id_token, audience: AS_A });
  check('refused: ID token issued to another client -> invalid_grant', isError(otherClient, 400, 'invalid_grant', 'not issued to client rp-xaa'), otherClient);
  const jagAsSubject = await exchange({ subject_token: jag, audience: AS_A });
  check('refused: an ID-JAG as subject token -> invalid_grant', isError(jagAsSubject, 400, 'invalid_grant'), jagAsSubject);
  const unknownAud = await exchange({ subject_token: idToken, audience: 'https://unknown.example' });
  check('refused: unknown audience -> invalid_target', isError(unknownAud, 400, 'invalid_target', 'https://unknown.example'), unknownAud);
  const badResource = await exchange({ subject_token: idToken, audience: AS_A, resource: 'not a uri' });
  check('refused: resource not an absolute URI -> invalid_target', isError(badResource, 400, 'invalid_target', 'resource'), badResource);
  const badScope = await exchange({ subject_token: idToken, audience: AS_A, scope: 'admin' });
  check('refused: only scopes the audience does not allow -> invalid_scope', isError(badScope, 400, 'invalid_scope'), badScope);
  const noAuth = await exchange({ subject_token: idToken, audience: AS_A }, { auth: 'none' });
  // oidc-provider's answer for every grant type when a request carries no client credentials at all.
  check('refused: no client authentication -> 400 invalid_request "no client authentication mechanism provided"',
    isError(noAuth, 400, 'invalid_request', 'no client authentication'), noAuth);
  const wrongSecret = await exchange({ subject_token: idToken, audience: AS_A }, { client: { ...xaa, client_secret: 'wrong' } });
  check('refused: wrong client secret -> 401 invalid_client', isError(wrongSecret, 401, 'invalid_client'), wrongSecret);
  const rpOwn = await exchange({ subject_token: rpSignIn?.tokens.id_token, audience: AS_A }, { client: rp });
  check('exchange: a client without grant_types listing token-exchange may exchange its own ID token', rpOwn.status === 200, rpOwn);
  const rpXaa = await exchange({ subject_token: idToken, audience: AS_A }, { client: rp });
  check('refused: client rp presenting rp-xaa\'s ID token -> invalid_grant', isError(rpXaa, 400, 'invalid_grant', 'not issued to client rp '), rpXaa);

  // Disabled account: code exchange, token exchange, refresh, userinfo and
  // sign-in are refused; enabling it again restores them. The code is issued
  // before the account is disabled; one sign-in rides u1's live session.
  const disJar = new CookieJar();
  const s4 = await signIn(xaa, 'before disable', 'u1', disJar);
  const codeVerifier = 'v'.repeat(43);
  const authorize = (browser) => follow(browser, `${disco.authorization_endpoint}?${form({
    client_id: xaa.client_id, response_type: 'code', redirect_uri: REDIRECT, scope: 'openid', login_hint: 'u1', state: 'st',
    code_challenge: crypto.hash('sha256', codeVerifier, 'base64url'), code_challenge_method: 'S256',
  })}`);
  const code = (await authorize(new CookieJar())).redirect?.searchParams.get('code');
  check('POST /_test/disable bad input -> 400', (await postJson(`${issuer}/_test/disable`, { sub: 'nobody', disabled: true })).status === 400
    && (await postJson(`${issuer}/_test/disable`, { sub: 'u1' })).status === 400);
  const dis = await postJson(`${issuer}/_test/disable`, { sub: 'u1', disabled: true });
  check('POST /_test/disable {"sub":"u1","disabled":true}', dis.status === 200 && dis.json.disabled === true, dis);
  const disEx = await exchange({ subject_token: s4?.tokens.id_token, audience: AS_A });
  check('refused: disabled account, exchange -> invalid_grant "the account is disabled"', isError(disEx, 400, 'invalid_grant') && disEx.json.error_description === 'the account is disabled', disEx);
  const disRt = await refresh(s4?.tokens.refresh_token);
  check('refused: disabled account, refresh -> invalid_grant "the account is disabled"', isError(disRt, 400, 'invalid_grant') && disRt.json.error_description === 'the account is disabled', disRt);
  const disCode = await tokenRequest(disco.token_endpoint, xaa, {
    grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: codeVerifier,
  });
  check('refused: disabled account, code exchange -> invalid_grant "the account is disabled"', isError(disCode, 400, 'invalid_grant')
    && disCode.json.error_description === 'the account is disabled', disCode);
  const me = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${s4?.tokens.access_token}` } });
  check('refused: disabled account, userinfo -> 401 invalid_token', me.status === 401 && (await me.json()).error === 'invalid_token');
  for (const [label, browser] of [['fresh', new CookieJar()], ['live session', disJar]]) {
    const flow = await authorize(browser);
    const q = flow.redirect?.searchParams;
    check(`refused: disabled account sign-in (${label}) -> redirect to the client with error=access_denied`, q?.get('error') === 'access_denied'
      && q.get('error_description') === 'the account is disabled' && q.get('state') === 'st' && q.get('iss') === issuer && !q.get('code'), flow.redirect?.href ?? flow);
  }
  await postJson(`${issuer}/_test/disable`, { sub: 'u1', disabled: false });
  const reEx = await exchange({ subject_token: s4?.tokens.id_token, audience: AS_A });
  const reRt = await refresh(s4?.tokens.refresh_token);
  check('re-enabled: exchange and the same refresh token work again', reEx.status === 200 && reRt.status === 200, { reEx, reRt });

  const counts = await (await fetch(`${issuer}/_test/id-jag-count`)).json();
  check('GET /_test/id-jag-count counts issued and refused exchanges', counts.issued === issued && counts.refused === refused, { counts, want: { issued, refused } });

  await upstreamChecks({ issuer, disco, idToken, exchange });
}

// upstream.mjs trusting this IdP redeems its ID-JAG; one not trusting it refuses.
async function upstreamChecks({
  issuer, disco, idToken, exchange,
}) {
  const client = { client_id: 'broker-at-up', client_secret: 'up-secret', redirect_uris: [REDIRECT] };
  const env = (trusted) => ({ UP_PORT: '0', UP_CLIENTS: JSON.stringify([client]), UP_TRUSTED: JSON.stringify(trusted) });
  const trusting = startPeer(upstreamPath, env([{ issuer, jwks_uri: disco.jwks_uri }]), 'upstream (trusting)');
  const untrusting = startPeer(upstreamPath, env([]), 'upstream (not trusting)');
  let failures = 0;
  const expect = (name, condition, detail) => {
    if (!condition) failures += 1;
    check(name, condition, detail);
  };
  try {
    const upIssuer = await trusting.ready();
    const otherIssuer = await untrusting.ready();
    const audiences = {
      ...ID_JAG_AUDIENCES,
      [upIssuer]: { client_id: client.client_id, scopes: ['read', 'write'] },
      [otherIssuer]: { client_id: client.client_id },
    };
    const set = await postJson(`${issuer}/_test/id-jag-audiences`, audiences);
    expect('POST /_test/id-jag-audiences', set.status === 200 && JSON.stringify(set.json) === JSON.stringify(audiences), set);
    const badSet = await postJson(`${issuer}/_test/id-jag-audiences`, { [upIssuer]: { scopes: ['read'] } });
    expect('POST /_test/id-jag-audiences without client_id -> 400', badSet.status === 400, badSet);

    const redeem = (upstreamIssuer, assertion) => tokenRequest(`${upstreamIssuer}/token`, client, { grant_type: JWT_BEARER, assertion });
    const x1 = await exchange({ subject_token: idToken, audience: upIssuer, scope: 'read write admin' });
    const at = await redeem(upIssuer, x1.json.access_token);
    expect('upstream trusting the IdP: jwt-bearer with the ID-JAG -> 200 Bearer, scope read write', at.status === 200
      && at.json.token_type === 'Bearer' && !!at.json.access_token && at.json.scope === 'read write', at);
    const active = await postJson(`${upIssuer}/_test/active`, { token: at.json.access_token });
    expect('upstream: the access token is for sub u1 and client broker-at-up', active.json.active && active.json.sub === 'u1'
      && active.json.client_id === client.client_id, active);
    const again = await redeem(upIssuer, x1.json.access_token);
    expect('upstream: the same ID-JAG again -> invalid_grant (jti replay)', isError(again, 400, 'invalid_grant', 'jti'), again);

    // upstream.mjs re-fetches the issuer JWKS on an unknown kid at most once a second.
    const rot = await postJson(`${issuer}/_test/rotate-keys`, {});
    await new Promise((r) => { setTimeout(r, 1100); });
    const x2 = await exchange({ subject_token: idToken, audience: upIssuer, scope: 'read' });
    const at2 = await redeem(upIssuer, x2.json.access_token);
    expect('upstream: ID-JAG signed after an IdP key rotation (new kid) is accepted', decodeProtectedHeader(x2.json.access_token).kid === rot.json.kid
      && at2.status === 200 && at2.json.scope === 'read', at2);

    const x3 = await exchange({ subject_token: idToken, audience: otherIssuer, scope: 'read' });
    const refusedAt = await redeem(otherIssuer, x3.json.access_token);
    expect('upstream not trusting the IdP: jwt-bearer with the ID-JAG -> invalid_grant (issuer not trusted)', x3.status === 200
      && isError(refusedAt, 400, 'invalid_grant', 'not trusted'), refusedAt);

    // The ID token was signed before the rotations: accepted while its key is
    // published (above), refused once rotate-keys drops the old keys.
    await postJson(`${issuer}/_test/rotate-keys`, { keep_old: false });
    const dropped = await exchange({ subject_token: idToken, audience: upIssuer });
    expect('refused: subject token signed with a key no longer in /jwks -> invalid_grant', isError(dropped, 400, 'invalid_grant', 'kid'), dropped);
  } catch (err) {
    expect('upstream checks ran without exceptions', false, err.stack ?? String(err));
  } finally {
    await trusting.stop();
    await untrusting.stop();
    if (failures || process.env.SELFTEST_VERBOSE) {
      console.log(`--- upstream (trusting) stderr ---\n${trusting.stderr}\n--- upstream (not trusting) stderr ---\n${untrusting.stderr}`);
    }
  }
}
