// Render MJML files with the official renderer: node render.js FILE... -> JSON {file: html | {error}}
const fs = require("fs");
const mjml2html = require("mjml");
const out = {};
for (const file of process.argv.slice(2)) {
  try {
    const result = mjml2html(fs.readFileSync(file, "utf8"), { validationLevel: "soft", filePath: file });
    out[file] = result.html;
  } catch (err) {
    out[file] = { error: String(err && err.message ? err.message : err) };
  }
}
process.stdout.write(JSON.stringify(out));
