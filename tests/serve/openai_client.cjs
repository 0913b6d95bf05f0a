// openai_client.cjs — the official `openai` npm package against `lorac serve`, run by
// test_serve.sh: chat (whole and streamed), completions (whole and streamed), an error
// object, each answer compared with `lorac generate`'s for the same prompt.
// usage: node tests/serve/openai_client.cjs OPENAI_PACKAGE_DIR BASE_URL API_KEY REFS_JSON
const [pkg, baseURL, apiKey, refsPath] = process.argv.slice(2);
const OpenAI = require(pkg).default || require(pkg);
const refs = JSON.parse(require("fs").readFileSync(refsPath, "utf8"));
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
let failed = 0;
const fail = (m) => { failed++; console.log("  FAIL: openai client: " + m); };
const eq = (what, got, want) => { if (got !== want) fail(`${what}: ${JSON.stringify(got)} != lorac generate's ${JSON.stringify(want)}`); };

(async () => {
  const p = refs.prompts[0], max_tokens = refs.max_tokens;
  const models = await client.models.list();
  const ids = [];
  for await (const m of models) ids.push(m.id);
  if (ids.length !== 1) fail("models.list: " + JSON.stringify(ids));

  const c = await client.chat.completions.create({ model: ids[0], messages: [{ role: "user", content: p }], max_tokens, temperature: 0, seed: 1 });
  eq("chat", c.choices[0].message.content, refs.chat[p]);
  if (c.object !== "chat.completion" || !c.id || !c.created || c.usage.completion_tokens !== refs.tokens.chat[p] ||
      c.usage.total_tokens !== c.usage.prompt_tokens + c.usage.completion_tokens)
    fail("chat fields: " + JSON.stringify(c));

  let text = "", finish = null, usage = null;
  const stream = await client.chat.completions.create({ model: ids[0], messages: [{ role: "user", content: p }], max_tokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    if (!ch.choices.length) continue;
    text += ch.choices[0].delta.content || "";
    if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
  }
  eq("chat stream", text, refs.chat[p]);
  if (!finish || !usage || usage.completion_tokens !== refs.tokens.chat[p]) fail(`chat stream: finish ${finish}, usage ${JSON.stringify(usage)}`);

  const q = await client.completions.create({ model: ids[0], prompt: p, max_tokens, temperature: 0 });
  eq("completion", q.choices[0].text, refs.completion[p]);
  text = "";
  const qs = await client.completions.create({ model: ids[0], prompt: p, max_tokens, temperature: 0, stream: true });
  for await (const ch of qs) text += ch.choices[0].text;
  eq("completion stream", text, refs.completion[p]);

  try {
    await client.chat.completions.create({ model: ids[0], messages: [{ role: "user", content: p }], temperature: 7 });
    fail("temperature 7 was accepted");
  } catch (e) {
    if (e.status !== 400 || e.param !== "temperature" || !/temperature/.test(e.message)) fail("error object: " + e);
  }
  try {
    await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list();
    fail("a wrong API key was accepted");
  } catch (e) {
    if (e.status !== 401) fail("wrong key: " + e);
  }
  console.log(failed ? "openai client: failures" : "openai client: ok");
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.log("  FAIL: openai client: " + e); process.exit(1); });
