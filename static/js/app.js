/*
 * TimeTracker Integrations Gateway: the page's only script (no framework, no inline handlers;
 * the CSP allows script-src 'self' only).
 *
 * window.TT
 *   prefix, csrf                  from <body data-prefix data-csrf>
 *   url(path)                     '/api/x' -> prefix + '/api/x'
 *   api(path, {method, body})     fetch as JSON with X-CSRF-Token, same-origin credentials;
 *                                 resolves to the parsed answer, throws TT.ApiError (message =
 *                                 the answer's `error`, plus .status, .field, .data) otherwise
 *   refreshCard(nameOrElement, {fill})   re-fetch a card's status and redraw it
 *   formatDate(iso)               a date-time in the browser's locale
 *
 * Each card <section data-card="NAME"> gets its status from GET /api/integrations/NAME/status,
 * fills [data-status-badge], [data-last-sync], [data-last-error], sets data-state on the section
 * (loading, unavailable, unconfigured, inactive, reconnect, error, active, failed) and then
 * dispatches "tt:status" on it (event.detail = the status answer, or null).
 *
 * Declarative helpers for the connector forms included in a card (templates/cards/NAME.html):
 *   <form data-api-form="/api/integrations/NAME/config">  submitted as JSON through TT.api;
 *       fields are filled from the status answer on load and after a save.
 *       Field types: checkbox -> boolean; type=number or data-type="number" -> number or null;
 *       data-type="list" -> array from comma-separated text; data-type="json" -> parsed JSON;
 *       data-empty="null" -> null when blank; data-omit-empty -> left out when blank.
 *       A dotted name ("priority_labels.high") builds a nested object.
 *       Password inputs are never filled; when status has_<name> is true their placeholder says
 *       a value is stored (data-stored-placeholder overrides the text).
 *       A 400 answer with `field` marks that input aria-invalid.
 *   <button data-api-action="/api/integrations/NAME/test">  POSTs (data-method to change).
 *   data-success="Saved"          message shown on success (default: the answer's `message`);
 *                                 {key} is replaced by the answer's key ("Connected as {login}").
 *   data-confirm="Really?"        asks first (also works on ordinary forms and links).
 *   [data-form-message]           where a form's messages go (else the card's [data-card-message]).
 *   [data-status-field="key"]     text (or input value) set from the status answer.
 *   [data-show-if="key"] / [data-hide-if="key"]   shown/hidden by the truthiness of status[key].
 *   [data-result-field="key"]     filled from a successful answer's key (e.g. a generated
 *                                 webhook_secret) and unhidden with its [data-result-group].
 *   [data-copy="selector"]        copies the text/value of the element matched inside the card.
 *   <select data-projects>        filled with the user's active projects from GET /api/projects
 *                                 ({"projects": [{"id", "name"}]}); "No projects" until then or
 *                                 when none. A value set from the status is kept even when it
 *                                 is not (or not yet) in the list, so a save never drops it.
 * After a successful form or action the card's status is refreshed ("tt:saved" / "tt:action"
 * are dispatched on the form/button with the answer as detail).
 */
(function () {
  'use strict';

  var body = document.body;
  var prefix = (body.getAttribute('data-prefix') || '').replace(/\/+$/, '');
  var csrf = body.getAttribute('data-csrf') || '';

  // ---------------------------------------------------------------- fetch helper

  class ApiError extends Error {
    constructor(message, status, data) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.data = data || null;
      this.error = message;
      this.field = data && typeof data.field === 'string' ? data.field : null;
    }
  }

  function url(path) {
    if (/^https?:\/\//i.test(path)) return path;
    return prefix + (path.charAt(0) === '/' ? path : '/' + path);
  }

  async function api(path, options) {
    options = options || {};
    var hasBody = options.body !== undefined && options.body !== null;
    var method = (options.method || (hasBody ? 'POST' : 'GET')).toUpperCase();
    var headers = { Accept: 'application/json', 'X-CSRF-Token': TT.csrf };
    var payload;
    if (hasBody) {
      if (options.body instanceof FormData || options.body instanceof URLSearchParams) {
        payload = options.body;
      } else {
        headers['Content-Type'] = 'application/json';
        payload = JSON.stringify(options.body);
      }
    }
    var response;
    try {
      response = await fetch(url(path), {
        method: method,
        headers: headers,
        body: payload,
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (networkError) {
      throw new ApiError('The gateway could not be reached. Check your connection and try again.', 0, null);
    }
    var data = null;
    var type = response.headers.get('Content-Type') || '';
    if (type.indexOf('json') !== -1) {
      try {
        data = await response.json();
      } catch (parseError) {
        data = null;
      }
    }
    if (!response.ok || !data || data.ok === false) {
      var message = data && data.error ? String(data.error) : defaultError(response.status);
      throw new ApiError(message, response.status, data);
    }
    return data;
  }

  function defaultError(status) {
    if (status === 401) return 'Your session has ended. Sign in again.';
    if (status === 403) return 'Not allowed. Reload the page and try again.';
    if (status === 404) return 'Not available yet';
    if (status >= 500) return 'The gateway had a problem (HTTP ' + status + '). Try again later.';
    if (status >= 200 && status < 300) return 'Unexpected answer from the gateway.';
    return 'Request failed (HTTP ' + status + ').';
  }

  // ---------------------------------------------------------------- formatting

  var dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  function parseDate(iso) {
    if (!iso) return null;
    var text = String(iso);
    // The API sends UTC; treat a value without an offset as UTC too.
    if (/^\d{4}-\d{2}-\d{2}T[\d:.]+$/.test(text)) text += 'Z';
    var date = new Date(text);
    return isNaN(date.getTime()) ? null : date;
  }

  function formatDate(iso) {
    var date = parseDate(iso);
    return date ? dateFormat.format(date) : '';
  }

  var SYNC_OUTCOME = {
    success: 'succeeded',
    partial: 'partly succeeded',
    error: 'failed',
    pending: 'pending',
  };

  // ---------------------------------------------------------------- small DOM helpers

  function $(root, selector) {
    return root.querySelector(selector);
  }

  function $all(root, selector) {
    return Array.prototype.slice.call(root.querySelectorAll(selector));
  }

  function isControl(el) {
    return (
      el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement
    );
  }

  function setText(el, text) {
    if (!el) return;
    el.textContent = text || '';
    el.hidden = !text;
  }

  var TONES = ['badge-neutral', 'badge-success', 'badge-warning', 'badge-error', 'badge-muted'];

  function setBadge(card, text, tone) {
    var badge = $(card, '[data-status-badge]');
    if (!badge) return;
    badge.textContent = text;
    TONES.forEach(function (cls) {
      badge.classList.remove(cls);
    });
    badge.classList.add('badge-' + tone);
  }

  var ALERTS = ['alert-error', 'alert-success', 'alert-info'];

  function showMessage(el, text, tone) {
    if (!el) return;
    ALERTS.forEach(function (cls) {
      el.classList.remove(cls);
    });
    if (!text) {
      el.textContent = '';
      el.hidden = true;
      return;
    }
    el.classList.add('alert', 'alert-' + tone);
    el.setAttribute('role', tone === 'error' ? 'alert' : 'status');
    el.textContent = text;
    el.hidden = false;
  }

  function messageTarget(el) {
    var form = el.closest('form');
    var own = form && $(form, '[data-form-message]');
    if (own) return own;
    var card = el.closest('[data-card]');
    return card ? $(card, '[data-card-message]') : null;
  }

  function getPath(obj, path) {
    return path.split('.').reduce(function (value, key) {
      return value !== null && value !== undefined && typeof value === 'object' ? value[key] : undefined;
    }, obj);
  }

  function setPath(obj, path, value) {
    var keys = path.split('.');
    var last = keys.pop();
    var target = keys.reduce(function (node, key) {
      if (node[key] === null || typeof node[key] !== 'object') node[key] = {};
      return node[key];
    }, obj);
    target[last] = value;
  }

  // ---------------------------------------------------------------- card status

  function describe(card, status) {
    if (!status.configured) return ['Not configured', 'neutral', 'unconfigured'];
    if (status.reconnect_required) return ['Reconnect required', 'warning', 'reconnect'];
    if (!status.is_active) return ['Inactive', 'neutral', 'inactive'];
    if (status.last_sync_status === 'error') return ['Error', 'error', 'error'];
    return ['Active', 'success', 'active'];
  }

  function renderStatus(card, status) {
    var look = describe(card, status);
    setBadge(card, look[0], look[1]);
    card.setAttribute('data-state', look[2]);

    var lastSync = $(card, '[data-last-sync]');
    var when = formatDate(status.last_sync_at);
    var text = '';
    if (when) {
      var outcome = SYNC_OUTCOME[status.last_sync_status];
      text = 'Last sync ' + when + (outcome ? ' · ' + outcome : '');
    } else if (status.configured && card.hasAttribute('data-syncs')) {
      text = 'Never synced';
    }
    setText(lastSync, text);
    if (lastSync) {
      if (status.last_sync_at) lastSync.title = String(status.last_sync_at);
      else lastSync.removeAttribute('title');
    }

    setText($(card, '[data-last-error]'), status.last_error ? 'Last error: ' + status.last_error : '');

    renderFields(card, status);
  }

  // Connector-specific elements inside the card; {} clears them when the status is unknown.
  function renderFields(card, status) {
    $all(card, '[data-status-field]').forEach(function (el) {
      var value = getPath(status, el.getAttribute('data-status-field'));
      var shown = value === null || value === undefined ? '' : String(value);
      if (isControl(el)) el.value = shown;
      else el.textContent = shown;
      var group = el.closest('[data-status-group]');
      if (group) group.hidden = !shown;
    });
    $all(card, '[data-show-if]').forEach(function (el) {
      el.hidden = !getPath(status, el.getAttribute('data-show-if'));
    });
    $all(card, '[data-hide-if]').forEach(function (el) {
      el.hidden = !!getPath(status, el.getAttribute('data-hide-if'));
    });
  }

  function renderFailure(card, error) {
    card.setAttribute('data-state', error.status === 404 ? 'unavailable' : 'failed');
    renderFields(card, {});
    setText($(card, '[data-last-sync]'), '');
    if (error.status === 404) {
      setBadge(card, 'Not available yet', 'muted');
      setText($(card, '[data-last-error]'), '');
    } else {
      setBadge(card, 'Error', 'error');
      setText($(card, '[data-last-error]'), 'Could not load the status: ' + error.message);
    }
  }

  function cardElement(nameOrElement) {
    if (typeof nameOrElement !== 'string') return nameOrElement;
    return document.querySelector('[data-card="' + nameOrElement.replace(/[^\w-]/g, '') + '"]');
  }

  async function refreshCard(nameOrElement, options) {
    var card = cardElement(nameOrElement);
    if (!card) return null;
    var name = card.getAttribute('data-card');
    var fill = !options || options.fill !== false;
    card.setAttribute('aria-busy', 'true');
    var status = null;
    try {
      status = await api('/api/integrations/' + encodeURIComponent(name) + '/status');
      renderStatus(card, status);
      if (fill) {
        $all(card, 'form[data-api-form]').forEach(function (form) {
          fillForm(form, status);
        });
      }
    } catch (error) {
      renderFailure(card, error);
    } finally {
      card.removeAttribute('aria-busy');
    }
    card.dispatchEvent(new CustomEvent('tt:status', { detail: status, bubbles: true }));
    return status;
  }

  // ---------------------------------------------------------------- forms

  function fieldsOf(form) {
    return $all(form, 'input[name], select[name], textarea[name]').filter(function (el) {
      return el.name !== 'csrf_token' && !el.disabled && el.type !== 'submit' && el.type !== 'button';
    });
  }

  function fillForm(form, status) {
    fieldsOf(form).forEach(function (el) {
      if (el.type === 'password') {
        if (status['has_' + el.name]) {
          el.placeholder = el.getAttribute('data-stored-placeholder') || 'Stored · leave blank to keep';
        }
        return;
      }
      var value = getPath(status, el.name);
      if (value === undefined) return;
      var type = el.getAttribute('data-type');
      if (el.type === 'checkbox') {
        el.checked = !!value;
      } else if (el.type === 'radio') {
        el.checked = value !== null && String(value) === el.value;
      } else if (el instanceof HTMLSelectElement) {
        selectValue(el, value);
      } else if (value === null) {
        el.value = '';
      } else if (type === 'list' && Array.isArray(value)) {
        el.value = value.join(', ');
      } else if (type === 'json' || typeof value === 'object') {
        el.value = JSON.stringify(value, null, 2);
      } else {
        el.value = String(value);
      }
    });
  }

  function serialize(form) {
    var data = {};
    fieldsOf(form).forEach(function (el) {
      var type = el.getAttribute('data-type');
      var raw = el.value;
      var value;
      if (el.type === 'checkbox') {
        value = el.checked;
      } else if (el.type === 'radio') {
        if (!el.checked) return;
        value = raw;
      } else if (raw.trim() === '' && el.hasAttribute('data-omit-empty')) {
        return;
      } else if (type === 'number' || el.type === 'number') {
        value = raw.trim() === '' ? null : Number(raw);
        if (value !== null && isNaN(value)) throw fieldError(el, 'Enter a number');
      } else if (type === 'list') {
        value = raw.split(',').map(function (part) {
          return part.trim();
        }).filter(Boolean);
      } else if (type === 'json') {
        try {
          value = raw.trim() === '' ? null : JSON.parse(raw);
        } catch (parseError) {
          throw fieldError(el, 'Enter valid JSON');
        }
      } else if (raw.trim() === '' && el.getAttribute('data-empty') === 'null') {
        value = null;
      } else {
        value = el.type === 'password' ? raw : raw.trim();
      }
      setPath(data, el.name, value);
    });
    return data;
  }

  // data-success with {key} placeholders filled from the answer; the answer's message wins.
  function successText(el, answer, fallback) {
    if (answer && answer.message) return String(answer.message);
    var template = el.getAttribute('data-success');
    if (!template) return fallback;
    return template.replace(/\{([\w.]+)\}/g, function (match, key) {
      var value = getPath(answer, key);
      return value === undefined || value === null ? '' : String(value);
    });
  }

  function fieldError(el, message) {
    return new ApiError(message, 400, { ok: false, error: message, field: el.name });
  }

  function clearInvalid(form) {
    $all(form, '[aria-invalid="true"]').forEach(function (el) {
      el.removeAttribute('aria-invalid');
    });
  }

  function markInvalid(form, field) {
    if (!field) return;
    var el = fieldsOf(form).filter(function (candidate) {
      return candidate.name === field || candidate.name.split('.')[0] === field;
    })[0];
    if (el) {
      el.setAttribute('aria-invalid', 'true');
      el.focus();
    }
  }

  function setBusy(el, busy) {
    if (!el) return;
    el.disabled = busy;
    if (busy) el.setAttribute('aria-busy', 'true');
    else el.removeAttribute('aria-busy');
  }

  function showResults(card, answer) {
    if (!card) return;
    $all(card, '[data-result-field]').forEach(function (el) {
      var value = getPath(answer, el.getAttribute('data-result-field'));
      if (value === undefined || value === null || value === '') return;
      if (isControl(el)) el.value = String(value);
      else el.textContent = String(value);
      var group = el.closest('[data-result-group]');
      if (group) group.hidden = false;
      el.hidden = false;
    });
  }

  async function submitApiForm(form, submitter) {
    var message = messageTarget(form);
    var card = form.closest('[data-card]');
    var buttons = $all(form, 'button[type="submit"], button:not([type]), input[type="submit"]');
    clearInvalid(form);
    showMessage(message, '');
    var data;
    try {
      data = serialize(form);
    } catch (error) {
      markInvalid(form, error.field);
      showMessage(message, error.message, 'error');
      return;
    }
    if (submitter && submitter.name && submitter.name !== 'csrf_token') {
      data[submitter.name] = submitter.value === 'true' ? true : submitter.value;
    }
    buttons.forEach(function (button) {
      setBusy(button, true);
    });
    try {
      var answer = await api(form.getAttribute('data-api-form'), {
        method: form.getAttribute('data-method') || 'POST',
        body: data,
      });
      $all(form, 'input[type="password"]').forEach(function (el) {
        el.value = '';
      });
      showMessage(message, successText(form, answer, 'Saved'), 'success');
      showResults(card, answer);
      form.dispatchEvent(new CustomEvent('tt:saved', { detail: answer, bubbles: true }));
      if (card) await refreshCard(card, { fill: true });
    } catch (error) {
      markInvalid(form, error.field);
      showMessage(message, error.message, 'error');
    } finally {
      buttons.forEach(function (button) {
        setBusy(button, false);
      });
    }
  }

  async function runAction(button) {
    var message = messageTarget(button);
    var card = button.closest('[data-card]');
    showMessage(message, '');
    setBusy(button, true);
    try {
      var answer = await api(button.getAttribute('data-api-action'), {
        method: button.getAttribute('data-method') || 'POST',
        body: {},
      });
      showMessage(message, successText(button, answer, 'Done'), 'success');
      showResults(card, answer);
      button.dispatchEvent(new CustomEvent('tt:action', { detail: answer, bubbles: true }));
      if (card) await refreshCard(card, { fill: false });
    } catch (error) {
      showMessage(message, error.message, 'error');
    } finally {
      setBusy(button, false);
    }
  }

  async function copyFrom(button) {
    var card = button.closest('[data-card]') || document;
    var source = $(card, button.getAttribute('data-copy'));
    if (!source) return;
    var text = isControl(source) ? source.value : source.textContent;
    var original = button.getAttribute('data-label') || button.textContent;
    button.setAttribute('data-label', original);
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch (clipboardError) {
      // The clipboard API may be blocked inside an iframe: select the text for a manual copy.
      if (isControl(source)) {
        source.select();
      } else {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      button.textContent = 'Press Ctrl+C';
    }
    window.setTimeout(function () {
      button.textContent = original;
    }, 1800);
  }

  // ---------------------------------------------------------------- project pickers

  function makeOption(value, text) {
    var el = document.createElement('option');
    el.value = value;
    el.textContent = text;
    return el;
  }

  // Select `value`, adding an option for it when the list lacks it (projects not loaded yet, or
  // a project the list no longer offers): a save then keeps it, or the server says what is wrong.
  function selectValue(select, value) {
    var wanted = value === null || value === undefined ? '' : String(value);
    select.setAttribute('data-value', wanted);
    var known = $all(select, 'option').some(function (option) {
      return option.value === wanted;
    });
    if (!known) {
      select.appendChild(makeOption(wanted, select.hasAttribute('data-projects') ? 'Project #' + wanted : wanted));
    }
    select.value = wanted;
  }

  function fillProjects(select, projects) {
    var keep = select.value || select.getAttribute('data-value') || '';
    select.textContent = '';
    select.appendChild(makeOption('', projects.length ? 'Choose a project…' : 'No projects'));
    projects.forEach(function (project) {
      select.appendChild(makeOption(String(project.id), String(project.name)));
    });
    selectValue(select, keep);
    select.setAttribute('data-projects', projects.length ? 'loaded' : 'empty');
  }

  async function loadProjects() {
    var selects = $all(document, 'select[data-projects]');
    if (!selects.length) return;
    var projects = [];
    try {
      var answer = await api('/api/projects');
      if (Array.isArray(answer.projects)) projects = answer.projects;
    } catch (error) {
      projects = []; // the picker keeps saying "No projects"
    }
    selects.forEach(function (select) {
      fillProjects(select, projects);
    });
  }

  // ---------------------------------------------------------------- wiring

  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var question = form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (form.hasAttribute('data-api-form')) {
      event.preventDefault();
      submitApiForm(form, event.submitter || null);
    }
  });

  document.addEventListener('click', function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var confirmable = target.closest('a[data-confirm], button[data-confirm]');
    if (confirmable && !window.confirm(confirmable.getAttribute('data-confirm'))) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    var action = target.closest('[data-api-action]');
    if (action) {
      event.preventDefault();
      if (!action.disabled) runAction(action);
      return;
    }
    var copy = target.closest('[data-copy]');
    if (copy) {
      event.preventDefault();
      copyFrom(copy);
    }
  });

  var TT = {
    prefix: prefix,
    csrf: csrf,
    url: url,
    api: api,
    ApiError: ApiError,
    formatDate: formatDate,
    refreshCard: refreshCard,
    loadProjects: loadProjects,
  };
  window.TT = TT;

  function start() {
    loadProjects();
    $all(document, '[data-card]').forEach(function (card) {
      refreshCard(card, { fill: true });
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
