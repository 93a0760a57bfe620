// Builds the editor page into ../static/: editor.js + editor.css (esbuild bundle of GrapesJS,
// grapesjs-mjml and src/), editor.html, and the third-party licence texts. `npm ci && npm run build`.
import { build } from 'esbuild';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'static');

const result = await build({
  entryPoints: [join(here, 'src', 'editor.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  outfile: join(out, 'editor.js'),
  legalComments: 'none',
  metafile: true,
  logLevel: 'info',
  define: { 'process.env.NODE_ENV': '"production"' },
});
copyFileSync(join(here, 'src', 'editor.html'), join(out, 'editor.html'));

// The bundled packages and everything they depend on (their dist files bundle their own
// dependencies, e.g. grapesjs-mjml carries mjml-browser), each with its licence text.
const packages = new Map();
const visit = (name) => {
  const dir = join(here, 'node_modules', name);
  if (packages.has(name) || name.startsWith('@types/') || !existsSync(join(dir, 'package.json'))) return;
  packages.set(name, dir);
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  Object.keys(meta.dependencies || {}).forEach(visit);
};
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) visit(match[1]);
}
const sections = [...packages.keys()].sort().map((name) => {
  const dir = packages.get(name);
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const file = ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license', 'LICENCE'].map((f) => join(dir, f)).find(existsSync);
  const text = file ? readFileSync(file, 'utf8').trim() : `License: ${meta.license} (no licence file in the package)`;
  return `${name}@${meta.version} (${meta.license})\n\n${text}\n`;
});
writeFileSync(join(out, 'licenses.txt'), `Third-party code in editor.js and editor.css\n\n${sections.join('\n' + '-'.repeat(72) + '\n\n')}`);
