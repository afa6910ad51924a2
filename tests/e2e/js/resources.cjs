// Assistants, the long-term store and thread lifecycle through @langchain/langgraph-sdk (the JS SDK),
// against a runplane server serving tests/e2e/memory_app. Run by tests/e2e/test_resources_js.py:
//   NODE_PATH=<dir with node_modules> node resources.cjs http://127.0.0.1:PORT
// Prints one line per SDK method checked; exits non-zero on the first failure.
const assert = require("node:assert/strict");
const { Client } = require("@langchain/langgraph-sdk");

const client = new Client({ apiUrl: process.argv[2] });
const checked = [];
const ok = (method) => { checked.push(method); console.log(`ok ${method}`); };
const until = async (condition, what) => {
  for (let i = 0; i < 300; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
};

async function assistants() {
  const system = await client.assistants.get("remember");
  assert.equal(system.metadata.created_by, "system"); ok("assistants.get");
  const created = await client.assistants.create({ graphId: "remember", name: "js", metadata: { js: 1 }, context: { a: 1 } });
  assert.equal(created.version, 1); assert.deepEqual(created.config.configurable, { a: 1 }); ok("assistants.create");
  const updated = await client.assistants.update(created.assistant_id, { name: "js2", metadata: { more: 2 } });
  assert.equal(updated.version, 2); assert.deepEqual(updated.metadata, { js: 1, more: 2 }); ok("assistants.update");
  const versions = await client.assistants.getVersions(created.assistant_id);
  assert.deepEqual(versions.map((v) => v.version), [2, 1]); ok("assistants.getVersions");
  assert.equal((await client.assistants.setLatest(created.assistant_id, 1)).name, "js"); ok("assistants.setLatest");
  const found = await client.assistants.search({ metadata: { js: 1 } });
  assert.deepEqual(found.map((a) => a.assistant_id), [created.assistant_id]); ok("assistants.search");
  assert.equal(await client.assistants.count({ graphId: "remember" }), 2); ok("assistants.count");
  assert.ok((await client.assistants.getGraph(created.assistant_id)).nodes.length > 0); ok("assistants.getGraph");
  assert.equal((await client.assistants.getSchemas(created.assistant_id)).graph_id, "remember"); ok("assistants.getSchemas");
  assert.deepEqual(await client.assistants.getSubgraphs(created.assistant_id), {}); ok("assistants.getSubgraphs");
  await client.assistants.delete(created.assistant_id);
  await assert.rejects(client.assistants.get(created.assistant_id)); ok("assistants.delete");
}

async function store() {
  await client.store.putItem(["facts", "js"], "likes tea", { fact: "likes tea" }); ok("store.putItem");
  const thread = await client.threads.create();
  const values = await client.runs.wait(thread.thread_id, "remember", { input: { user: "js", fact: "sails" } });
  assert.deepEqual(values.known, ["likes tea", "sails"]);  // the graph read the HTTP write
  const item = await client.store.getItem(["facts", "js"], "sails");
  assert.deepEqual(item.value, { fact: "sails" });  // and HTTP reads the graph's write
  assert.equal(await client.store.getItem(["facts", "js"], "nothing"), null); ok("store.getItem");
  const found = await client.store.searchItems(["facts"], { filter: { fact: "sails" } });
  assert.deepEqual(found.items.map((i) => i.key), ["sails"]); ok("store.searchItems");
  assert.deepEqual(await client.store.listNamespaces({ prefix: ["facts"] }), { namespaces: [["facts", "js"]] }); ok("store.listNamespaces");
  await client.store.deleteItem(["facts", "js"], "sails");
  assert.equal(await client.store.getItem(["facts", "js"], "sails"), null); ok("store.deleteItem");
}

async function threads() {
  const short = await client.threads.create({ ttl: 0.005, metadata: { js: "short" } }); ok("threads.create (ttl)");
  const patched = await client.threads.create();
  await client.threads.update(patched.thread_id, { metadata: { p: 1 }, ttl: 0.005 }); ok("threads.update (ttl)");
  await until(async () => (await client.threads.count({ metadata: { js: "short" } })) === 0
    && (await client.threads.search({ ids: [patched.thread_id] })).length === 0, "the TTL sweep");
  await assert.rejects(client.threads.get(short.thread_id)); ok("threads.get");
  const kept = await client.threads.create({ metadata: { js: "kept" } });
  const stream = client.threads.joinStream(kept.thread_id);
  const first = await client.runs.create(kept.thread_id, "remember", { input: { user: "t", fact: "one" }, afterSeconds: 2 });
  const events = [];
  const reading = (async () => {
    for await (const part of stream) {
      events.push(part);
      if (part.event === "metadata" && part.data.status === "run_done") return;
    }
  })();
  await client.runs.join(kept.thread_id, first.run_id);
  await reading;
  assert.ok(events.some((p) => p.event === "values")); ok("threads.joinStream");
  await client.runs.wait(kept.thread_id, "remember", { input: { user: "t", fact: "two" } });
  const searched = await client.threads.search({ ids: [kept.thread_id], extract: { last: "values.known[-1]" }, select: ["thread_id"] });
  assert.deepEqual(searched, [{ thread_id: kept.thread_id, extracted: { last: "two" } }]); ok("threads.search (extract)");
  assert.ok((await client.threads.getHistory(kept.thread_id, { limit: 100 })).length > 1);
  assert.deepEqual(await client.threads.prune([kept.thread_id], { strategy: "keep_latest" }), { pruned_count: 1 });
  assert.equal((await client.threads.getHistory(kept.thread_id, { limit: 100 })).length, 1);
  assert.deepEqual(await client.threads.prune([kept.thread_id]), { pruned_count: 1 }); ok("threads.prune");
}

(async () => {
  await assistants();
  await store();
  await threads();
  console.log(JSON.stringify({ checked }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
