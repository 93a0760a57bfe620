"""The drag-and-drop email editor page (GrapesJS + grapesjs-mjml) and its MJML conversion."""
