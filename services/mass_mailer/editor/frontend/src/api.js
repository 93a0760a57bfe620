// The template API, called with the API key from sessionStorage (never stored elsewhere).

const KEY = 'mailsvc.apiKey';

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (value) => sessionStorage.setItem(KEY, value),
  forget: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === 'object' && 'detail' in body ? body.detail : body;
    const details = Array.isArray(detail)
      ? detail.map((e) => `${(e.loc || []).filter((p) => p !== 'body').join('.') || 'request'}: ${e.msg}`)
      : [typeof detail === 'string' ? detail : JSON.stringify(detail)];
    super(`HTTP ${status}: ${details.join('; ')}`);
    this.status = status;
    this.details = details;
  }
}

export async function call(method, path, body, extraHeaders = {}) {
  const headers = { Accept: 'application/json', 'X-API-Key': apiKey.get(), ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text for the message
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
