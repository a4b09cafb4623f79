// Builds every plugin folder here (one `plugin.js` each) into a WebAssembly component at
// ../target/js/<folder>.wasm, with componentize-js (pinned in package.json).
//
//   npm ci && node build.mjs            # all plugins
//   node build.mjs speaker_filter       # one
//
// Every WASI feature is left out of the component: a Hookgate plugin gets only `host.log`, so
// the component imports exactly the hookgate:plugin world. Clocks and randomness are kept
// (`Date.now()`, `Math.random()` work as in every language; see plugins/README.md).
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'target', 'js');
const wit = join(here, '..', '..', 'wit');

const wanted = process.argv.slice(2);
const names = wanted.length > 0 ? wanted : (await readdir(here, { withFileTypes: true }))
  .filter((d) => d.isDirectory() && d.name !== 'node_modules')
  .map((d) => d.name);

await mkdir(out, { recursive: true });
for (const name of names) {
  const source = join(here, name, 'plugin.js');
  await stat(source);
  const { component } = await componentize({
    sourcePath: source,
    witPath: wit,
    worldName: 'plugin',
    disableFeatures: ['stdio', 'http', 'fetch-event'],
  });
  await writeFile(join(out, `${name}.wasm`), component);
  console.log(`built ${join(out, `${name}.wasm`)} (${component.length} bytes)`);
}
