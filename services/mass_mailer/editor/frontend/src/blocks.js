// Our own blocks and the merge-tag picker. Every link uses a built-in link merge tag
// (templates/links.py) and every merge tag a contact field the renderer fills (templates/compiled.py).

export const MERGE_FIELDS = [
  ['contact.first_name', 'First name'],
  ['contact.last_name', 'Last name'],
  ['contact.email', 'Email address'],
  ['contact.language', 'Language'],
];

const icon = (path) => `<svg viewBox="0 0 24 24"><path fill="currentColor" d="${path}"/></svg>`;
const LINK = 'M10.6 13.4a1 1 0 0 1 0-1.4l3.5-3.5a3 3 0 1 1 4.2 4.2l-2 2-1.4-1.4 2-2a1 1 0 1 0-1.4-1.4L12 13.4a1 1 0 0 1-1.4 0ZM13.4 10.6a1 1 0 0 1 0 1.4l-3.5 3.5a3 3 0 1 1-4.2-4.2l2-2 1.4 1.4-2 2a1 1 0 1 0 1.4 1.4L12 10.6a1 1 0 0 1 1.4 0Z';
const BUTTON = 'M4 7h16a2 2 0 0 1 2 2v6a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V9a2 2 0 0 1 2-2Zm0 2v6h16V9H4Zm3 2h10v2H7v-2Z';
const PERSON = 'M12 12a4 4 0 1 1 0-8 4 4 0 0 1 0 8Zm0 2c4.4 0 8 1.8 8 4v2H4v-2c0-2.2 3.6-4 8-4Z';
const CALENDAR = 'M7 2h2v2h6V2h2v2h3v18H4V4h3V2Zm11 8H6v10h12V10Z';

const SMALL_TEXT = 'align="center" font-size="12px" color="#666666"';

export const CUSTOM_BLOCKS = [
  {
    id: 'mailsvc-unsubscribe',
    label: 'Unsubscribe link',
    media: icon(LINK),
    content: `<mj-text ${SMALL_TEXT}><a href="{{ links.unsubscribe }}">Unsubscribe</a></mj-text>`,
  },
  {
    id: 'mailsvc-online-view',
    label: 'View-online link',
    media: icon(LINK),
    content: `<mj-text ${SMALL_TEXT}><a href="{{ links.online_view }}">View this email in your browser</a></mj-text>`,
  },
  {
    id: 'mailsvc-survey',
    label: 'Survey button',
    media: icon(BUTTON),
    content: '<mj-button href="{{ links.survey }}">Take the survey</mj-button>',
  },
  {
    id: 'mailsvc-calendar',
    label: 'Calendar link',
    media: icon(CALENDAR),
    content: '<mj-button href="{{ links.calendar }}">Add to calendar</mj-button>',
  },
  {
    id: 'mailsvc-greeting',
    label: 'Greeting (first name)',
    media: icon(PERSON),
    content: '<mj-text>Hello {{ contact.first_name }},</mj-text>',
  },
];

export function addCustomBlocks(editor) {
  for (const { id, ...block } of CUSTOM_BLOCKS) {
    editor.Blocks.add(id, { ...block, category: 'Our blocks', select: true });
  }
}

// A select in the rich-text toolbar that inserts a merge tag at the caret.
export function addMergeTagPicker(editor) {
  const options = MERGE_FIELDS.map(([tag, label]) => `<option value="{{ ${tag} }}">${label}</option>`).join('');
  editor.RichTextEditor.add('merge-tag', {
    icon: `<select class="gjs-field mailsvc-merge" title="Insert a merge tag"><option value="">Merge tag…</option>${options}</select>`,
    event: 'change',
    result: (rte, action) => {
      const select = action.btn.querySelector('select');
      if (select && select.value) {
        rte.insertHTML(select.value);
        select.value = '';
      }
    },
    update: (rte, action) => {
      const select = action.btn.querySelector('select');
      if (select) select.value = '';
    },
  });
}
