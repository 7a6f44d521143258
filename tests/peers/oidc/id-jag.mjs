// ID-JAG issuance for the OpenID Provider peer (provider.mjs): the IdP side of
// "Cross App Access" (draft-ietf-oauth-identity-assertion-authz-grant). A
// relying party exchanges an ID token this provider issued to it for an
// Identity Assertion JWT Authorization Grant by RFC 8693 token exchange:
//
//   POST /token  grant_type=urn:ietf:params:oauth:grant-type:token-exchange
//     requested_token_type=urn:ietf:params:oauth:token-type:id-jag
//     subject_token=<ID token>  subject_token_type=urn:ietf:params:oauth:token-type:id_token
//     audience=<issuer of the target authorization server>  [scope]  [resource]
//
// The ID-JAG is signed with the provider's current ES256 key (published in
// /jwks), so an authorization server trusting this issuer (upstream.mjs with
// UP_TRUSTED) redeems it at its jwt-bearer grant. Audiences come from
// OP_ID_JAG_AUDIENCES (or POST /_test/id-jag-audiences); see README.md.
//
// This module imports jose but not oidc-provider: provider.mjs passes in
// oidc-provider's `errors`.

import * as crypto from 'node:crypto';
import {
  SignJWT, createLocalJWKSet, decodeJwt, decodeProtectedHeader, importJWK, jwtVerify,
} from 'jose';

import { invalidGrantError } from './peer-common.mjs';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TT_ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
export const TT_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
export const ID_JAG_TYP = 'oauth-id-jag+jwt';
export const ID_JAG_TTL = 300; // seconds

// Parameters of the grant. None may be repeated: one audience, at most one resource.
export const TOKEN_EXCHANGE_PARAMS = [
  'subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope', 'resource',
];

const SUBJECT_TOKEN_ALGS = ['ES256', 'RS256'];
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'key_ops'];

// Validates the OP_ID_JAG_AUDIENCES shape:
//   {"<audience issuer URL>": {"client_id": "...", "scopes": ["..."]?}, ...}
// Returns a Map audience -> { clientId, scopes (array or undefined) };
// throws an Error saying what is wrong.
export function parseAudiences(value, name = 'OP_ID_JAG_AUDIENCES') {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${name} must be a JSON object mapping audience issuer URL to {"client_id","scopes"?}`);
  }
  const out = new Map();
  for (const [audience, entry] of Object.entries(value)) {
    if (!audience) throw new Error(`${name}: an audience must be a non-empty string`);
    if (entry === null || typeof entry !== 'object' || typeof entry.client_id !== 'string' || !entry.client_id) {
      throw new Error(`${name}[${audience}] needs a non-empty client_id`);
    }
    const { scopes } = entry;
    if (scopes !== undefined && (!Array.isArray(scopes) || !scopes.every((s) => typeof s === 'string' && s && !s.includes(' ')))) {
      throw new Error(`${name}[${audience}].scopes must be an array of scope strings`);
    }
    out.set(audience, { clientId: entry.client_id, scopes });
  }
  return out;
}

export function audiencesToJson(map) {
  return Object.fromEntries([...map].map(([aud, { clientId, scopes }]) => [
    aud, { client_id: clientId, ...(scopes ? { scopes } : {}) },
  ]));
}

export const publicJwk = (jwk) => Object.fromEntries(
  Object.entries(jwk).filter(([k]) => !PRIVATE_MEMBERS.includes(k)),
);

// The token-exchange grant and its counters.
//
//   errors          oidc-provider's errors
//   log             stderr logger
//   issuer()        this provider's issuer
//   audiences       Map from parseAudiences (replaceable with setAudiences)
//   account(sub)    { claims, disabled } or undefined
//   signingKey()    the current ES256 private JWK (with kid)
//   publishedKeys() every JWK in /jwks (private parts are stripped here)
export function createIdJagGrant({
  errors, log, issuer, audiences: initialAudiences, account, signingKey, publishedKeys,
}) {
  let audiences = initialAudiences;
  const counts = { issued: 0, refused: 0 };

  const invalidGrant = (why) => invalidGrantError(errors, why);

  function joseReason(err) {
    switch (err?.code) {
      case 'ERR_JWT_EXPIRED': return 'the subject token is expired';
      case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
        return err.claim === 'iss'
          ? `the subject token was not issued by this provider (iss must be ${issuer()})`
          : `the subject token failed a claim check: ${err.message}`;
      case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return "the subject token signature does not verify with this provider's keys";
      case 'ERR_JWKS_NO_MATCHING_KEY': return "the subject token's kid is not one of this provider's keys";
      case 'ERR_JOSE_ALG_NOT_ALLOWED': return `the subject token alg must be one of ${SUBJECT_TOKEN_ALGS.join(', ')}`;
      case 'ERR_JWS_INVALID':
      case 'ERR_JWT_INVALID': return 'the subject token is not a valid JWT';
      default: return `the subject token was rejected: ${err?.message ?? err}`;
    }
  }

  // The subject token must be an ID token this provider signed for `clientId`.
  async function verifySubjectToken(token, clientId) {
    let header;
    try {
      header = decodeProtectedHeader(token);
      decodeJwt(token);
    } catch {
      throw invalidGrant('the subject token is not a JWT');
    }
    if (header.typ === ID_JAG_TYP) throw invalidGrant('the subject token is an ID-JAG, not an ID token');
    const keys = createLocalJWKSet({ keys: publishedKeys().map(publicJwk) });
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(token, keys, {
        issuer: issuer(), algorithms: SUBJECT_TOKEN_ALGS, requiredClaims: ['exp', 'sub', 'aud'],
      }));
    } catch (err) {
      throw invalidGrant(joseReason(err));
    }
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(clientId)) {
      throw invalidGrant(`the subject token was not issued to client ${clientId} (aud ${aud.join(' ')})`);
    }
    return claims;
  }

  function grantedScope(requested, allowed, audience) {
    if (!requested) return undefined;
    const asked = [...new Set(requested.split(' ').filter(Boolean))];
    const scopes = allowed ? asked.filter((s) => allowed.includes(s)) : asked;
    if (scopes.length === 0) {
      throw new errors.InvalidScope(`none of the requested scopes is allowed for audience ${audience}`, requested);
    }
    return scopes.join(' ');
  }

  async function handler(ctx) {
    const { params, client } = ctx.oidc;
    if (params.requested_token_type !== TT_ID_JAG) {
      throw new errors.InvalidRequest(`requested_token_type must be ${TT_ID_JAG}`);
    }
    for (const name of ['subject_token', 'subject_token_type', 'audience']) {
      if (!params[name]) throw new errors.InvalidRequest(`missing required parameter '${name}'`);
    }
    if (params.subject_token_type !== TT_ID_TOKEN) {
      throw invalidGrant(`subject_token_type must be ${TT_ID_TOKEN}`);
    }
    const subject = await verifySubjectToken(params.subject_token, client.clientId);

    const acct = account(subject.sub);
    if (!acct) throw invalidGrant(`the account ${subject.sub} does not exist`);
    if (acct.disabled) throw invalidGrant('the account is disabled');

    const target = audiences.get(params.audience);
    if (!target) throw new errors.InvalidTarget(`audience ${params.audience} is not a known authorization server`);
    if (params.resource !== undefined) {
      try {
        new URL(params.resource); // eslint-disable-line no-new
      } catch {
        throw new errors.InvalidTarget('resource must be an absolute URI');
      }
    }
    const scope = grantedScope(params.scope, target.scopes, params.audience);

    const key = signingKey();
    const iat = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer(),
      sub: subject.sub,
      aud: params.audience,
      client_id: target.clientId,
      jti: crypto.randomBytes(16).toString('base64url'),
      iat,
      exp: iat + ID_JAG_TTL,
      ...(scope ? { scope } : {}),
      ...(params.resource ? { resource: params.resource } : {}),
      ...(typeof acct.claims.email === 'string' ? { email: acct.claims.email } : {}),
    };
    const jag = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: ID_JAG_TYP })
      .sign(await importJWK(key, 'ES256'));

    counts.issued += 1;
    log(`token-exchange: ID-JAG for sub ${subject.sub} client ${client.clientId} -> aud ${params.audience} `
      + `(client_id ${target.clientId}) scope "${scope ?? ''}" kid ${key.kid} [issued ${counts.issued}]`);
    ctx.body = {
      access_token: jag,
      issued_token_type: TT_ID_JAG,
      token_type: 'N_A',
      expires_in: ID_JAG_TTL,
      ...(scope ? { scope } : {}),
    };
  }

  // Called for every failed token request (oidc-provider's grant.error and
  // server_error events); counts and logs the token-exchange ones.
  function onTokenError(ctx, err) {
    if (ctx.oidc?.params?.grant_type !== TOKEN_EXCHANGE) return;
    counts.refused += 1;
    const why = err?.error_description ?? err?.message;
    log(`token-exchange refused: client ${ctx.oidc.client?.clientId ?? '(unauthenticated)'}: `
      + `${err?.error ?? 'server_error'} (${why}) [refused ${counts.refused}]`);
  }

  return {
    handler,
    onTokenError,
    counts: () => ({ ...counts }),
    audiences: () => audiences,
    setAudiences(map) {
      audiences = map;
    },
  };
}
