// An agent in Node: fetch through undici's EnvHttpProxyAgent, which reads HTTPS_PROXY (with the
// agent and secret in it) like the Python clients; NODE_EXTRA_CA_CERTS trusts the proxy's CA.
// Run as `node node_fetch.cjs '<json spec>'` with NODE_PATH at undici's node_modules; prints one
// JSON report like identify_client.py: status, agent_header, whoami_status, whoami.
const { EnvHttpProxyAgent, fetch } = require("undici");

async function main() {
  const spec = JSON.parse(process.argv[2]);
  const dispatcher = new EnvHttpProxyAgent();
  const headers = { "content-type": "application/json", ...(spec.headers || {}) };
  const chat = await fetch("https://api.openai.com/v1/chat/completions", {
    method: "POST",
    dispatcher,
    headers,
    body: JSON.stringify({
      model: "gpt-4o-mini",
      max_tokens: 8,
      messages: [{ role: "user", content: "who am I, from node?" }],
    }),
  });
  await chat.text();
  const whoami = await fetch("https://spendbrake.local/whoami", { dispatcher, headers });
  console.log(
    JSON.stringify({
      status: chat.status,
      agent_header: chat.headers.get("x-spendbrake-agent"),
      whoami_status: whoami.status,
      whoami: await whoami.json(),
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
