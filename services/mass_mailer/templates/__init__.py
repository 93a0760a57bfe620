"""Email templates: MJML-JSON designs validated against an allowlist, rendered to HTML once per
version, and merged per recipient in a jinja2 sandbox (see compiled.CompiledTemplate)."""
