// Black-box test with Node @grpc/grpc-js, loading the repo's protos at run time.
// Usage: node node_client.js HOST:PORT REPO_ROOT
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const [address, repo] = process.argv.slice(2);

// The google.rpc messages this client needs to read grpc-status-details-bin.
const rpcTypes = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  // google.protobuf.Any, wire-compatible, declared here so the parse needs no imports.
  message AnyDetail { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated AnyDetail details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message BadRequest {
    message FieldViolation { string field = 1; string description = 2; string reason = 3; }
    repeated FieldViolation field_violations = 1;
  }
  message PreconditionFailure {
    message Violation { string type = 1; string subject = 2; string description = 3; }
    repeated Violation violations = 1;
  }
`, { keepCase: true }).root;

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

function details(error) {
  const raw = error.metadata.get('grpc-status-details-bin')[0];
  assert.ok(raw, 'grpc-status-details-bin present');
  const status = rpcTypes.lookupType('google.rpc.Status').decode(raw);
  const found = {};
  for (const any of status.details) {
    const fullName = any.type_url.split('/').pop(); // type.googleapis.com/google.rpc.ErrorInfo
    found[fullName.split('.').pop()] = rpcTypes.lookupType(fullName).decode(any.value);
  }
  return found;
}

async function main() {
  const definition = protoLoader.loadSync(
    ['provision/v1/provision_policy_service.proto'],
    { keepCase: true, longs: String, enums: String, defaults: false, oneofs: true, includeDirs: [path.join(repo, 'proto')] },
  );
  const v1 = grpc.loadPackageDefinition(definition).provision.v1;
  const client = new v1.ProvisionPolicyService(address, grpc.credentials.createInsecure());

  const entitlement = { app_id: 'node-app', entitlement_id: 'viewers' };
  const resource = {
    entitlement,
    provision_policy: {
      multi_step: {
        provision_steps: [
          { external_ticket: { app_id: 'jira', connector_id: 'jira-connector', external_ticket_provisioner_config_id: 'cfg-1', instructions: 'File in IT.' } },
          { delegated: { app_id: 'okta', entitlement_id: 'everyone', implicit: true } },
        ],
      },
    },
  };

  const set = await call(client, 'SetProvisionPolicy', { policy: resource });
  assert.equal(set.policy.revision, '1');
  assert.equal(set.policy.etag, '"1"');

  const got = await call(client, 'GetProvisionPolicy', { entitlement });
  assert.deepEqual(got.policy, set.policy);
  assert.equal(got.policy.provision_policy.multi_step.provision_steps[0].external_ticket.connector_id, 'jira-connector');

  const invalid = { entitlement, provision_policy: { delegated: { app_id: 'node-app', entitlement_id: 'viewers' } } };
  const answer = await call(client, 'ValidateProvisionPolicy', { policy: invalid });
  assert.ok(!answer.valid, "proto3 omits false; absent means invalid");
  assert.ok(answer.violations.some((v) => v.reason === 'SELF_DELEGATION' && v.severity === 'SEVERITY_ERROR'),
    JSON.stringify(answer.violations));

  await assert.rejects(call(client, 'SetProvisionPolicy', { policy: invalid }), (error) => {
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    const found = details(error);
    assert.equal(found.ErrorInfo.reason, 'INVALID_PROVISION_POLICY');
    assert.equal(found.ErrorInfo.domain, 'provisiond');
    assert.ok(found.BadRequest.field_violations.some((v) => v.reason === 'SELF_DELEGATION'),
      JSON.stringify(found.BadRequest));
    return true;
  });

  await assert.rejects(call(client, 'SetProvisionPolicy', { policy: resource, etag: '"5"' }), (error) => {
    assert.equal(error.code, grpc.status.ABORTED);
    const found = details(error);
    assert.equal(found.ErrorInfo.reason, 'ETAG_MISMATCH');
    assert.equal(found.PreconditionFailure.violations[0].subject, 'apps/node-app/entitlements/viewers');
    return true;
  });

  // A listing of 5 policies, 2 a page, followed to the end: each once, in (app_id,
  // entitlement_id) order, every page at one read_at, later pages unaffected by later writes.
  const listApp = 'node-list-app';
  const listIds = ['n-d', 'n-b', 'n-e', 'n-a', 'n-c']; // not written in order
  const webhookOf = (entitlement_id) => ({ webhook: { webhook_id: `hook-${entitlement_id}` } });
  for (const entitlement_id of listIds) {
    const written = await call(client, 'SetProvisionPolicy', {
      policy: { entitlement: { app_id: listApp, entitlement_id }, provision_policy: webhookOf(entitlement_id) },
    });
    assert.ok(written.change_cursor, 'Set carries a change_cursor');
  }
  await call(client, 'SetProvisionPolicy', { // an app whose id starts with ours: filtered out
    policy: { entitlement: { app_id: `${listApp}-x`, entitlement_id: 'n-a' }, provision_policy: webhookOf('x') },
  });
  const listed = [];
  const readAts = new Set();
  const sizes = [];
  let pageToken = '';
  let firstToken;
  for (;;) {
    const page = await call(client, 'ListProvisionPolicies', { app_id: listApp, page_size: 2, page_token: pageToken });
    assert.ok(page.read_at, 'every page carries read_at');
    readAts.add(page.read_at);
    const policies = page.policies || [];
    sizes.push(policies.length);
    listed.push(...policies);
    assert.ok(sizes.length < 10, `the listing ends: ${sizes}`);
    if (firstToken === undefined) {
      firstToken = page.next_page_token;
      // Writes between pages: the later pages still show the store at read_at.
      await call(client, 'SetProvisionPolicy', {
        policy: { entitlement: { app_id: listApp, entitlement_id: 'n-e' }, provision_policy: webhookOf('late') },
      });
      await call(client, 'SetProvisionPolicy', {
        policy: { entitlement: { app_id: listApp, entitlement_id: 'n-f' }, provision_policy: webhookOf('late') },
      });
    }
    if (!page.next_page_token) break;
    pageToken = page.next_page_token;
  }
  assert.deepEqual(listed.map((p) => [p.entitlement.app_id, p.entitlement.entitlement_id]),
    [...listIds].sort().map((id) => [listApp, id]), 'all 5 once, in (app_id, entitlement_id) order');
  assert.deepEqual(sizes, [2, 2, 1], 'pages of at most 2');
  assert.equal(readAts.size, 1, `one read_at on every page: ${[...readAts]}`);
  assert.deepEqual(listed.map((p) => [p.revision, p.provision_policy.webhook.webhook_id]),
    [...listIds].sort().map((id) => ['1', `hook-${id}`]), 'the listing shows the store at read_at');

  // A page token belongs to its listing's app_id.
  assert.ok(firstToken, 'the first page has a next_page_token');
  await assert.rejects(call(client, 'ListProvisionPolicies', { app_id: 'node-app', page_size: 2, page_token: firstToken }), (error) => {
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    const found = details(error);
    assert.equal(found.ErrorInfo.reason, 'INVALID_REQUEST');
    assert.ok(found.BadRequest.field_violations.some((v) => v.field === 'page_token' && v.reason === 'INVALID_PAGE_TOKEN'),
      JSON.stringify(found.BadRequest));
    return true;
  });

  client.close();
  console.log('node: all checks passed');
}

main().catch((error) => {
  console.error('FAIL:', error);
  process.exit(1);
});
