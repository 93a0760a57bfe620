// The email editor page: GrapesJS + grapesjs-mjml, loading and saving through the template API.
import grapesjs from 'grapesjs';
import grapesjsMjml from 'grapesjs-mjml';
import 'grapesjs/dist/css/grapes.min.css';
import './editor.css';
import { ApiError, apiKey, call } from './api.js';
import { addCustomBlocks, addMergeTagPicker } from './blocks.js';

const $ = (id) => document.getElementById(id);
// A light grey 600x240 PNG, shown until the marketer picks an image.
const PLACEHOLDER_IMAGE =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAlgAAADwCAIAAABT1I0hAAAC8UlEQVR42u3VMQ0AAAgEsffvj4kRI6hgokkV3HKpHgB4KxIAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAYIQAGKEKABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghABghAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIAEYIgBGqAIARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAoARAmCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAGCEAHBrAbRUVFmwf4L0AAAAAElFTkSuQmCC';
const NEW_DESIGN =
  '<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ contact.first_name }},</mj-text></mj-column></mj-section></mj-body></mjml>';
const MJML_BLOCKS = ['mj-1-column', 'mj-2-columns', 'mj-3-columns', 'mj-text', 'mj-button', 'mj-image',
  'mj-divider', 'mj-spacer', 'mj-social-group', 'mj-social-element', 'mj-navbar', 'mj-navbar-link',
  'mj-hero', 'mj-wrapper'];

const match = location.pathname.match(/^\/editor\/(\d+)$/);
let templateId = match ? Number(match[1]) : null;
let saved = { mjml: '', fields: '' }; // what the server has, to know whether a test needs a save
let version = null; // the template version this page started from: saves send it as If-Match

const editor = grapesjs.init({
  container: '#gjs',
  height: '100%',
  width: 'auto',
  fromElement: false,
  storageManager: false,
  telemetry: false,
  cssIcons: '',
  avoidInlineStyle: false,
  blockManager: { appendTo: '#blocks' },
  assetManager: { upload: false },
  plugins: [
    (ed) =>
      grapesjsMjml(ed, {
        blocks: MJML_BLOCKS,
        imagePlaceholderSrc: PLACEHOLDER_IMAGE,
        resetBlocks: true,
        fonts: {},
      }),
    addCustomBlocks,
  ],
});
addMergeTagPicker(editor);
window.mailsvcEditor = editor; // for the browser tests and the console; holds no secret

const svg = (d) => `<svg viewBox="0 0 24 24" width="18" height="18"><path fill="currentColor" d="${d}"/></svg>`;
const PANEL_ICONS = {
  'sw-visibility': svg('M3 3h18v18H3V3Zm2 2v14h14V5H5Z'),
  preview: svg('M12 5c5 0 9 4.5 10 7-1 2.5-5 7-10 7S3 14.5 2 12c1-2.5 5-7 10-7Zm0 3a4 4 0 1 0 0 8 4 4 0 0 0 0-8Z'),
  fullscreen: svg('M3 3h7v2H5v5H3V3Zm11 0h7v7h-2V5h-5V3ZM3 14h2v5h5v2H3v-7Zm16 0h2v7h-7v-2h5v-5Z'),
  'export-template': svg('M8.6 16.6 4 12l4.6-4.6L10 8.8 6.8 12l3.2 3.2-1.4 1.4Zm6.8 0L14 15.2l3.2-3.2L14 8.8l1.4-1.4L20 12l-4.6 4.6Z'),
  'open-sm': svg('M7 14c-1.7 0-3 1.3-3 3 0 1.3-1.2 2-2 2 .9 1.2 2.5 2 4 2 2.2 0 4-1.8 4-4 0-1.7-1.3-3-3-3Zm13.7-9.4-1.3-1.3a1 1 0 0 0-1.4 0L9 12.3l2.7 2.7 9-9a1 1 0 0 0 0-1.4Z'),
  'open-tm': svg('M12 8a4 4 0 1 1 0 8 4 4 0 0 1 0-8Zm-1-6h2l.5 3 2 .8 2.5-1.8 1.4 1.4-1.8 2.5.8 2 3 .5v2l-3 .5-.8 2 1.8 2.5-1.4 1.4-2.5-1.8-2 .8-.5 3h-2l-.5-3-2-.8-2.5 1.8-1.4-1.4 1.8-2.5-.8-2-3-.5v-2l3-.5.8-2-1.8-2.5 1.4-1.4 2.5 1.8 2-.8.5-3Z'),
  'open-layers': svg('M3 5h18v2H3V5Zm0 6h18v2H3v-2Zm0 6h18v2H3v-2Z'),
};
// Panel icons as inline SVG (GrapesJS would fetch Font Awesome from a CDN); blocks live in #blocks.
function setPanelIcons() {
  for (const panel of editor.Panels.getPanels()) {
    for (const button of panel.get('buttons') || []) {
      if (PANEL_ICONS[button.id]) button.set({ className: '', label: PANEL_ICONS[button.id] });
    }
  }
  editor.Panels.removeButton('views', 'open-blocks');
}

function markSaved() {
  saved = { mjml: editor.getHtml(), fields: JSON.stringify(fields()) };
}

function changed() {
  return templateId === null || editor.getHtml() !== saved.mjml || JSON.stringify(fields()) !== saved.fields;
}

function setStatus(text) {
  $('status').textContent = text;
}

function clearErrors() {
  $('errors').hidden = true;
  $('errors-list').replaceChildren();
}

function showErrors(title, error) {
  const details = error instanceof ApiError ? error.details : [String(error && error.message ? error.message : error)];
  $('errors-title').textContent = title;
  $('errors-list').replaceChildren(
    ...details.map((text) => {
      const item = document.createElement('li');
      item.textContent = text;
      return item;
    }),
  );
  $('errors').hidden = false;
  setStatus('');
}

function fields() {
  return { name: $('name').value.trim(), subject: $('subject').value.trim(), preheader: $('preheader').value.trim() };
}

function enable(on) {
  for (const id of ['save', 'preview', 'send-test']) $(id).disabled = !on;
}

function askForKey(message = '') {
  $('key-error').textContent = message;
  $('api-key').value = '';
  $('key-panel').hidden = false;
  $('api-key').focus();
}

async function designFromEditor() {
  const { design } = await call('POST', '/v1/editor/from-mjml', { mjml: editor.getHtml() });
  return design;
}

async function load() {
  clearErrors();
  if (templateId === null) {
    $('name').value = $('name').value || 'Untitled template';
    $('subject').value = $('subject').value || 'Hello {{ contact.first_name }}';
    editor.setComponents(NEW_DESIGN);
  } else {
    setStatus('Loading…');
    const template = await call('GET', `/v1/templates/${templateId}`);
    const { mjml } = await call('POST', '/v1/editor/to-mjml', { design: template.design });
    $('name').value = template.name;
    $('subject').value = template.subject;
    $('preheader').value = template.preheader || '';
    version = template.current_version_id;
    editor.setComponents(mjml);
    setStatus(`Template ${template.id}, version ${template.version_count}`);
  }
  editor.UndoManager.clear();
  markSaved();
  enable(true);
  document.body.dataset.loaded = templateId === null ? 'new' : String(templateId);
}

async function start() {
  if (!apiKey.get()) {
    askForKey();
    return;
  }
  try {
    await load();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      askForKey(error.details.join('; '));
    } else {
      showErrors('The template could not be loaded', error);
    }
  }
}

async function save() {
  clearErrors();
  setStatus('Saving…');
  $('save').disabled = true;
  try {
    const body = { ...fields(), design: await designFromEditor() };
    const template =
      templateId === null
        ? await call('POST', '/v1/templates', body)
        : await call('PATCH', `/v1/templates/${templateId}`, body, { 'If-Match': `"${version}"` });
    version = template.current_version_id;
    if (templateId === null) {
      templateId = template.id;
      history.replaceState(null, '', `/editor/${template.id}`);
    }
    markSaved();
    setStatus(`Saved: template ${template.id}, version ${template.version_count}`);
    document.body.dataset.saved = String(template.version_count);
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 412) {
      showErrors(
        'Not saved: someone else saved this template meanwhile. Reload the page to get their ' +
          'version (copy what you need from here first: reloading discards your changes).',
        error,
      );
    } else {
      showErrors('Not saved: the server refused the template', error);
    }
    return false;
  } finally {
    $('save').disabled = false;
  }
}

async function preview() {
  clearErrors();
  setStatus('Rendering preview…');
  try {
    const { subject, preheader } = fields();
    const rendered = await call('POST', '/v1/templates/render', {
      design: await designFromEditor(),
      subject,
      preheader,
      data: {},
    });
    $('preview-subject').textContent = `Subject: ${rendered.subject}`;
    $('preview-desktop').srcdoc = rendered.html;
    $('preview-mobile').srcdoc = rendered.html;
    $('preview-panel').hidden = false;
    document.body.dataset.preview = 'shown';
    setStatus(`Preview: ${rendered.html_chars.toLocaleString()} HTML characters`);
  } catch (error) {
    showErrors('The preview could not be rendered', error);
  }
}

function randomId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function sendTest() {
  clearErrors();
  const addresses = $('test-to').value.split(/[\s,;]+/).filter(Boolean);
  if (addresses.length === 0) {
    showErrors('No test sent', new Error('enter one or more addresses'));
    return;
  }
  if (changed() && !(await save())) return;
  setStatus('Sending test…');
  try {
    for (const address of addresses) {
      await call('POST', '/v1/transactional', {
        correlation_id: `editor-test-${templateId}-${randomId()}`,
        to: [address],
        template_id: String(templateId),
        merge_data: {
          contact: { first_name: 'Test', last_name: 'Recipient', email: address, custom: {} },
          links: {},
        },
        source: 'editor-test',
      });
    }
    setStatus(`Test queued for ${addresses.join(', ')}`);
  } catch (error) {
    showErrors('The test was not sent', error);
  }
}

$('save').addEventListener('click', save);
$('preview').addEventListener('click', preview);
$('send-test').addEventListener('click', sendTest);
$('preview-close').addEventListener('click', () => {
  $('preview-panel').hidden = true;
  document.body.dataset.preview = 'hidden';
});
$('errors-close').addEventListener('click', clearErrors);
$('change-key').addEventListener('click', () => askForKey());
$('key-forget').addEventListener('click', () => {
  apiKey.forget();
  askForKey('The key was removed from this tab.');
});
$('key-ok').addEventListener('click', () => {
  const value = $('api-key').value.trim();
  if (!value) {
    $('key-error').textContent = 'Enter an API key.';
    return;
  }
  apiKey.set(value);
  $('api-key').value = '';
  $('key-panel').hidden = true;
  start();
});
$('api-key').addEventListener('keydown', (event) => {
  if (event.key === 'Enter') $('key-ok').click();
});

setPanelIcons();
editor.onReady(start);
