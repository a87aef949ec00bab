/*
 * TimeTracker Integrations Gateway: the page's only script (no framework, no inline handlers;
 * the CSP allows script-src 'self' only).
 *
 * window.TT
 *   prefix, csrf                  from <body data-prefix data-csrf>
 *   url(path)                     '/api/x' -> prefix + '/api/x'
 *   api(path, {method, body})     fetch as JSON with X-CSRF-Token, same-origin credentials;
 *                                 resolves to the parsed answer, throws TT.ApiError (message =
 *                                 the answer's `error`, plus .status, .field, .code, .data)
 *   refreshCard(nameOrElement, {fill})   re-fetch a card's status and redraw it
 *   explain(card, error)          {text, action} in plain words for an ApiError or an error text
 *
 * THE CARD FRAME (templates/cards.html). <section data-card="NAME" data-installed> gets its
 * status from GET /api/integrations/NAME/status; a card without data-installed is "Coming soon"
 * and fetches nothing. The state comes from the status answer's facts (DESIGN §10 "Status
 * answers", "Connection facts"), set as data-state on the section and shown in
 * [data-status-badge] and [data-card-detail]:
 *   unconfigured  "Not configured"    no integration yet
 *   incomplete    "Incomplete"        inactive; names what is missing (`missing`, else the
 *                                     card's data-required keys that the status lacks)
 *   off           "Off"               switched off (`enabled: false`); secrets kept
 *   attention     "Needs attention"   the newest outcome is an error (last_error, a failed
 *                                     sync or delivery, or a failed Test/Sync on this page),
 *                                     explained with its next step
 *   connected     "Connected"         as `connected_as`, with the last activity
 *   failed / coming-soon              the status could not be read / connector not installed
 * Then "tt:status" is dispatched on the section (event.detail = the status answer, or null).
 *
 * A configured card shows [data-card-summary] (its [data-summary] line, Edit, actions, the on/off
 * [data-card-switch] when the status has `enabled`, and Disconnect with a confirm step); the form
 * in [data-card-body] shows only when editing or not yet working. Every message of a card goes to
 * its one [data-card-message]: a new message replaces the old one.
 *
 * Declarative helpers for the parts in templates/cards/NAME.html:
 *   <form data-api-form="/api/integrations/NAME/config">  submitted as JSON through TT.api;
 *       fields are filled from the status answer on load and after a save.
 *       Field types: checkbox -> boolean; type=number or data-type="number" -> number or null;
 *       data-type="list" -> array from comma-separated text; data-type="json" -> parsed JSON;
 *       data-empty="null" -> null when blank; data-omit-empty -> left out when blank.
 *       A dotted name ("priority_labels.high") builds a nested object.
 *       data-join="a b" (instead of a name): one field for two keys written "a/b" (a URL's
 *       last two path segments work too); data-join-hint is the message for a bad value.
 *       Password inputs are never filled; when status has_<name> is true their placeholder says
 *       a value is stored (data-stored-placeholder overrides the text).
 *       A 400 answer with `field` marks that input aria-invalid.
 *       data-verify="#button": after a save that stored a new secret and left the connector
 *       active, that button (e.g. Test) runs at once, so a bad token shows now, not later.
 *   <button data-api-action="/api/…">  POSTs data-body (JSON, default {}); data-method changes it.
 *                                 data-check: it asks the provider (Test, Sync), so its success
 *                                 makes an older error stale.
 *   data-success="Saved"          message shown on success (default: the answer's `message`);
 *                                 {key} is replaced by the answer's key, {a|b} by the first set.
 *   data-confirm="Really?"        window.confirm first (ordinary forms and links).
 *   [data-reveal="#id"] / [data-conceal]   an inline confirm step: show #id ([data-reveal-target])
 *                                 / hide the enclosing one.
 *   [data-status-field="key"]     text (or input value) set from the status answer.
 *   [data-show-if="key"] / [data-hide-if="key"]   shown/hidden by the truthiness of status[key].
 *   [data-summary="{a}/{b} → {c:project}"]   the summary line; ":project" shows a project's name.
 *   <dialog data-secret-dialog="key">  opened (modal, focus inside) when an answer carries `key`
 *                                 (a one-time secret), the value in its [data-secret-value];
 *                                 [data-dialog-close] closes it and wipes the value.
 *   [data-copy="selector"]        copies the text/value of the element matched inside the card.
 *   <select data-projects>        filled with the user's active projects from GET /api/projects.
 *
 * EMBEDDED (<body data-embedded>): the page's height is posted to the parent window as
 * {type: "tt-gateway:height", height} whenever it changes (docs/integrations/README.md).
 */
(function () {
  'use strict';

  var body = document.body;
  var prefix = (body.getAttribute('data-prefix') || '').replace(/\/+$/, '');
  var csrf = body.getAttribute('data-csrf') || '';
  var viewQuery = body.getAttribute('data-view-query') || '';

  // ---------------------------------------------------------------- fetch helper

  class ApiError extends Error {
    constructor(message, status, data) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.data = data || null;
      this.error = message;
      this.field = data && typeof data.field === 'string' ? data.field : null;
      this.code = data && typeof data.code === 'string' ? data.code : null;
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
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(options.body);
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
      throw new ApiError('The gateway could not be reached.', 0, null);
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
      var message = data && data.error ? String(data.error) : 'HTTP ' + response.status;
      throw new ApiError(message, response.status, data);
    }
    return data;
  }

  // ---------------------------------------------------------------- plain-language errors

  var PATTERNS = [
    ['bad_token', /\b401\b|bad credentials|invalid_auth|not_authed|token_revoked|token_expired|account_inactive|invalid_grant|unauthori[sz]ed|rejected the (bot )?token/i],
    ['rate_limited', /rate.?limit|\b429\b|retry after/i],
    ['forbidden', /\b403\b|forbidden|missing_scope|resource not accessible/i],
    ['not_found', /\b404\b|not found|channel_not_found/i],
    ['network', /network|timed? ?out|could not be reached|did not answer|connect(or|ion)|dns|ECONN/i],
    ['provider_down', /\b5\d\d\b|server error|service unavailable/i],
  ];

  function cardTitle(card) {
    return (card && card.getAttribute('data-title')) || 'The service';
  }

  function tokenAction(card) {
    var href = card && card.getAttribute('data-token-url');
    var label = (card && card.getAttribute('data-token-label')) || 'Create a token';
    return href ? { label: label, href: href, external: true } : null;
  }

  function reconnectAction(card) {
    var href = card && card.getAttribute('data-connect-url');
    // The whole window: Google's consent screen refuses to show inside an iframe.
    return href ? { label: 'Reconnect', href: href, top: true } : null;
  }

  function sentence(text) {
    text = String(text || '').trim();
    return text && !/[.!?]$/.test(text) ? text + '.' : text;
  }

  function providerError(card, code, raw) {
    var title = cardTitle(card);
    var scopes = (card && card.getAttribute('data-token-scopes')) || '';
    // Some providers' messages (Slack's) already say what to fix: kept as they are, with the
    // link to the provider's token page when a token was refused; only the outages that every
    // provider shares get the common sentences below.
    var kind = codeOf(String(code || '')) || codeOf(String(raw || ''));
    if (card && card.hasAttribute('data-plain-errors') && raw && ['network', 'provider_down', 'rate_limited'].indexOf(kind) === -1) {
      return {
        text: sentence(raw),
        action: kind === 'bad_token' || kind === 'forbidden' ? tokenAction(card) : null,
      };
    }
    if (kind && ['bad_token', 'forbidden', 'not_found', 'rate_limited', 'network', 'provider_down'].indexOf(code) === -1) {
      code = kind;
    }
    // An OAuth connector (Google) has no token to paste: a refused one means connecting again.
    if (code === 'bad_token' && reconnectAction(card)) {
      return { text: title + ' no longer accepts this connection (access was revoked or has expired): connect again.', action: reconnectAction(card) };
    }
    switch (code) {
      case 'bad_token':
        return {
          text: title + ' rejected the token: create a new one' + (scopes ? ' ' + scopes : '') + ' and save it here.',
          action: tokenAction(card),
        };
      case 'forbidden':
        return {
          text: title + ' refused access: the token lacks a permission. Create one' + (scopes ? ' ' + scopes : '') + '.',
          action: tokenAction(card),
        };
      case 'not_found':
        return { text: title + ' cannot find what is configured: check the name (Edit), and that the token can see it.', action: null };
      case 'rate_limited':
        return { text: title + ' is limiting requests right now: wait a few minutes, then try again.', action: null };
      case 'network':
        return { text: title + ' could not be reached. Nothing was changed: it is safe to try again.', action: null };
      case 'provider_down':
        return { text: title + ' had a problem on its side. It is safe to try again in a few minutes.', action: null };
      default:
        return { text: raw, action: null };
    }
  }

  function codeOf(text) {
    for (var i = 0; i < PATTERNS.length; i++) {
      if (PATTERNS[i][1].test(text)) return PATTERNS[i][0];
    }
    return null;
  }

  // {text, action}: action is {label, href, external} or {label, reload: true} or null.
  function explain(card, error) {
    if (typeof error === 'string') {
      return providerError(card, codeOf(error), error);
    }
    var status = error.status;
    var raw = error.message || '';
    if (status === 0) {
      return { text: 'The gateway could not be reached. Check your connection: it is safe to try again.', action: null };
    }
    if (status === 401) {
      return {
        text: 'Your session has ended.',
        action: { label: 'Sign in again', href: prefix + '/login' + viewQuery },
      };
    }
    if (status === 403 && /csrf|cross-site/i.test(raw)) {
      return { text: 'This page is out of date.', action: { label: 'Reload the page', reload: true } };
    }
    if (status === 403 && /admin/i.test(raw)) {
      return { text: 'Only an administrator can do this.', action: null };
    }
    if (status === 404 || status === 405) {
      return { text: 'This action is not available in this version of the gateway.', action: null };
    }
    if (error.data && (error.data.reconnect_required || error.code === 'reconnect_required')) {
      return {
        text: cardTitle(card) + ' no longer accepts this connection (access was revoked or has expired): connect again.',
        action: reconnectAction(card),
      };
    }
    if (status === 409) {
      return { text: 'Finish the set-up first: fill in the missing settings and Save.', action: null };
    }
    if (isProviderFailure(error)) {
      return providerError(card, error.code || codeOf(raw), raw);
    }
    if (status >= 500) {
      return { text: 'The gateway had a problem. It is safe to try again; if it keeps failing, tell your administrator.', action: null };
    }
    if (status === 400) {
      return { text: withProjectNames(raw), action: null };
    }
    return providerError(card, error.code || codeOf(raw), raw);
  }

  // The provider refused or failed (Test answers 200, Sync 502 with ok:false and an error).
  function isProviderFailure(error) {
    return !!(error && error.data && error.data.error && (error.status === 200 || error.status === 502 || error.code));
  }

  // "Project 12 already receives…" names the project.
  function withProjectNames(text) {
    return text.replace(/\bProject (\d+)\b/g, function (match, id) {
      var name = projectNames[id];
      return name ? 'The project “' + name + '”' : match;
    });
  }

  // ---------------------------------------------------------------- formatting

  var dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  var relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

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

  function ago(date) {
    var seconds = Math.round((date.getTime() - Date.now()) / 1000);
    var abs = Math.abs(seconds);
    if (abs < 45) return 'just now';
    if (abs < 3600) return relativeFormat.format(Math.round(seconds / 60), 'minute');
    if (abs < 86400) return relativeFormat.format(Math.round(seconds / 3600), 'hour');
    if (abs < 7 * 86400) return relativeFormat.format(Math.round(seconds / 86400), 'day');
    return dateFormat.format(date);
  }

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

  function actionNode(action) {
    if (!action) return null;
    if (action.reload) {
      var button = document.createElement('button');
      button.type = 'button';
      button.className = 'link';
      button.textContent = action.label;
      button.setAttribute('data-reload', '');
      return button;
    }
    var link = document.createElement('a');
    link.className = 'link';
    link.href = action.href;
    link.textContent = action.label;
    if (action.external) {
      link.target = '_blank';
      link.rel = 'noopener noreferrer';
    } else if (action.top) {
      link.target = '_top';
    } else if (body.hasAttribute('data-embedded')) {
      link.target = '_self';
    }
    return link;
  }

  // Text plus an optional action link, replacing whatever the element held.
  function fillExplained(el, text, action) {
    el.textContent = '';
    el.appendChild(document.createTextNode(text));
    var node = actionNode(action);
    if (node) {
      el.appendChild(document.createTextNode(' '));
      el.appendChild(node);
    }
  }

  var ALERTS = ['alert-error', 'alert-success', 'alert-info', 'alert-warning'];

  // The card's one message area: a new message replaces the old one.
  function showMessage(card, text, tone, action) {
    var el = card ? $(card, '[data-card-message]') : null;
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
    el.setAttribute('data-tone', tone);
    fillExplained(el, text, action);
    el.hidden = false;
  }

  function showError(card, error) {
    var explained = explain(card, error);
    showMessage(card, explained.text, 'error', explained.action);
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

  // "{a}/{b}", "{a|b}" (first one set), "{id:project}" (the project's name), "{at:date}" (a
  // date in words), "{key:option}" (the text of the card's <option> for the value; `root`).
  function template(text, data, root) {
    return text.replace(/\{([\w.|]+)(?::(\w+))?\}/g, function (match, keys, filter) {
      var value;
      keys.split('|').some(function (key) {
        value = getPath(data, key);
        return value !== undefined && value !== null && value !== '';
      });
      if (value === undefined || value === null) return '';
      if (filter === 'project') return projectNames[String(value)] || data.project_name || 'project #' + value;
      if (filter === 'date') return formatDate(value);
      if (filter === 'option' && root) {
        var option = $all(root, 'select[name="' + keys.split('|')[0] + '"] option').filter(function (el) {
          return el.value === String(value);
        })[0];
        if (option) return option.textContent;
      }
      return String(value);
    });
  }

  // ---------------------------------------------------------------- card state from facts

  var cards = new WeakMap(); // card -> {status, failure, editing}

  function cardData(card) {
    var data = cards.get(card);
    if (!data) {
      data = { status: null, failure: null, checkedOk: 0, editing: false };
      cards.set(card, data);
    }
    return data;
  }

  var FAILED = /error|fail|reject|invalid|denied/i;

  function time(iso) {
    var date = parseDate(iso);
    return date ? date.getTime() : null;
  }

  function jsonAttr(card, name) {
    try {
      return JSON.parse(card.getAttribute(name) || '{}') || {};
    } catch (parseError) {
      return {};
    }
  }

  function labelFor(card, key) {
    var labels = jsonAttr(card, 'data-labels');
    if (labels[key]) return labels[key];
    var field = fieldFor(card, key);
    var label = field && field.id ? $(card, 'label[for="' + field.id + '"]') : null;
    if (label) return label.firstChild ? label.firstChild.textContent.trim() : label.textContent.trim();
    return key.replace(/_/g, ' ');
  }

  function missingOf(card, status) {
    var keys = Array.isArray(status.missing) ? status.missing : null;
    if (!keys) {
      keys = (card.getAttribute('data-required') || '').split(/\s+/).filter(function (key) {
        if (!key) return false;
        var value = status[key];
        return !status['has_' + key] && (value === undefined || value === null || value === '');
      });
    }
    // Keys the gateway makes itself (data-generated, e.g. GitHub's webhook secret) are named
    // only when nothing else is missing: a save then makes them.
    var generated = (card.getAttribute('data-generated') || '').split(/\s+/);
    var own = keys.filter(function (key) {
      return generated.indexOf(String(key)) === -1;
    });
    if (own.length) keys = own;
    var words = [];
    keys.forEach(function (key) {
      var word = labelFor(card, String(key));
      if (words.indexOf(word) === -1) words.push(word);
    });
    return words;
  }

  function listText(words) {
    if (words.length < 2) return words.join('');
    return words.slice(0, -1).join(', ') + ' and ' + words[words.length - 1];
  }

  // The newest of: the last delivery/event, the last sync, a failure seen on this page.
  function latestActivity(status) {
    var items = [];
    if (time(status.last_event_at)) {
      items.push({ at: time(status.last_event_at), what: 'last delivery', failed: FAILED.test(status.last_event_status || '') });
    }
    if (time(status.last_sync_at)) {
      items.push({ at: time(status.last_sync_at), what: 'last sync', failed: status.last_sync_status === 'error' });
    }
    if (time(status.last_checked_at)) {
      items.push({
        at: time(status.last_checked_at),
        what: 'checked',
        failed: status.last_check_status === 'error',
        error: status.last_check_error,
      });
    }
    items.sort(function (a, b) {
      return b.at - a.at;
    });
    return items;
  }

  // The error to show, or null: an error is stale once a later success happened.
  function currentProblem(status, failure, checkedOk) {
    var items = latestActivity(status);
    var lastSuccess = checkedOk || 0;
    items.forEach(function (item) {
      if (!item.failed && item.at > lastSuccess) lastSuccess = item.at;
    });
    if (failure && (!lastSuccess || failure.at >= lastSuccess)) return failure.error;
    // The newest failure (sync, delivery or check) counts unless a success came after it.
    var failedItem = items.filter(function (item) {
      return item.failed;
    })[0];
    if (failedItem && failedItem.at >= lastSuccess) {
      return failedItem.error || status.last_error || 'The last ' + failedItem.what.replace('last ', '') + ' failed.';
    }
    // An error recorded without a time of its own (the server clears it on a later success).
    if (status.last_error && !failedItem) return status.last_error;
    return null;
  }

  function describe(card, status, failure) {
    if (!status.configured) {
      return { state: 'unconfigured', badge: 'Not configured', tone: 'neutral', detail: 'Not set up yet.' };
    }
    if (status.enabled === false) {
      return { state: 'off', badge: 'Off', tone: 'muted', detail: 'Switched off: nothing is received or sent. Your settings and secrets are kept.' };
    }
    if (status.reconnect_required) {
      return {
        state: 'attention',
        badge: 'Needs attention',
        tone: 'error',
        detail: cardTitle(card) + ' no longer accepts this connection: connect again.',
        action: reconnectAction(card),
      };
    }
    if (!status.is_active) {
      var missing = missingOf(card, status);
      return {
        state: 'incomplete',
        badge: 'Incomplete',
        tone: 'warning',
        detail: missing.length ? 'To connect, add ' + listText(missing) + '.' : 'Not connected: finish the settings and Save.',
      };
    }
    var problem = currentProblem(status, failure, cardData(card).checkedOk);
    if (problem) {
      var explained = explain(card, problem);
      return { state: 'attention', badge: 'Needs attention', tone: 'error', detail: explained.text, action: explained.action };
    }
    var parts = [];
    var account = card.getAttribute('data-account');
    var who = status.connected_as || (account ? status[account] : null);
    if (who) parts.push('as ' + who);
    var newest = latestActivity(status)[0];
    var detail = 'Connected' + (parts.length ? ' ' + parts.join('') : '');
    if (newest) {
      detail += ' · ' + newest.what + ' ' + ago(new Date(newest.at));
    } else {
      detail += ' · no activity yet';
    }
    // Connected, but a setting the work needs is still missing (Google: a project to import into).
    var stillMissing = Array.isArray(status.missing) && status.missing.length ? missingOf(card, status) : [];
    if (stillMissing.length) detail += ' · to sync, add ' + listText(stillMissing) + ' (Edit)';
    return { state: 'connected', badge: 'Connected', tone: 'success', detail: detail, title: newest ? dateFormat.format(new Date(newest.at)) : '' };
  }

  function render(card) {
    var data = cardData(card);
    var status = data.status;
    if (!status) return;
    var look = describe(card, status, data.failure);
    setBadge(card, look.badge, look.tone);
    card.setAttribute('data-state', look.state);
    var detail = $(card, '[data-card-detail]');
    if (detail) {
      fillExplained(detail, look.detail || '', look.action || null);
      detail.hidden = !look.detail;
      if (look.title) detail.title = look.title;
      else detail.removeAttribute('title');
      detail.classList.toggle('text-red-700', look.state === 'attention');
      detail.classList.toggle('text-slate-600', look.state !== 'attention');
    }
    renderFields(card, status);
    renderLayout(card, look.state);
  }

  // The summary for a card that works (or worked); the form when editing or not yet working.
  function renderLayout(card, state) {
    var data = cardData(card);
    var summary = $(card, '[data-card-summary]');
    var bodyEl = $(card, '[data-card-body]');
    var compact = state === 'connected' || state === 'attention' || state === 'off';
    if (summary) summary.hidden = !compact;
    if (bodyEl) bodyEl.hidden = compact && !data.editing;
    $all(card, '[data-card-edit]').forEach(function (button) {
      button.setAttribute('aria-expanded', String(!!data.editing));
      button.textContent = data.editing ? 'Close settings' : 'Edit';
    });
    $all(card, '[data-card-edit-done]').forEach(function (button) {
      button.hidden = !compact;
    });
    var toggle = $(card, '[data-card-switch]');
    if (toggle && data.status) {
      var known = typeof data.status.enabled === 'boolean';
      toggle.hidden = !known;
      // The name stays "On"; aria-checked (and the drawn switch) carries the state.
      toggle.setAttribute('aria-checked', String(data.status.enabled !== false));
    }
    $all(card, '[data-summary]').forEach(function (el) {
      var text = data.status ? template(el.getAttribute('data-summary'), data.status, card).trim() : '';
      el.textContent = text || el.getAttribute('data-summary-empty') || '';
    });
  }

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
    card.setAttribute('data-state', 'failed');
    setBadge(card, 'Unknown', 'muted');
    var explained = explain(card, error);
    var detail = $(card, '[data-card-detail]');
    if (detail) {
      fillExplained(detail, 'The status could not be read. ' + explained.text, explained.action);
      detail.hidden = false;
    }
  }

  function cardElement(nameOrElement) {
    if (typeof nameOrElement !== 'string') return nameOrElement;
    return document.querySelector('[data-card="' + nameOrElement.replace(/[^\w-]/g, '') + '"]');
  }

  async function refreshCard(nameOrElement, options) {
    var card = cardElement(nameOrElement);
    if (!card || !card.hasAttribute('data-installed')) return null;
    var name = card.getAttribute('data-card');
    var fill = !options || options.fill !== false;
    card.setAttribute('aria-busy', 'true');
    var status = null;
    try {
      status = await api('/api/integrations/' + encodeURIComponent(name) + '/status');
      cardData(card).status = status;
      render(card);
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
    if (status && status.connected) loadOptions(card);
    card.dispatchEvent(new CustomEvent('tt:status', { detail: status, bubbles: true }));
    return status;
  }

  // <datalist data-options-from="/api/…" data-options-key="calendars">: suggestions from the
  // provider (e.g. the user's calendars), loaded once the card is connected. The input stays
  // free text, so a failed load only means no suggestions.
  async function loadOptions(card) {
    var lists = $all(card, 'datalist[data-options-from]:not([data-options])');
    for (var i = 0; i < lists.length; i++) {
      var list = lists[i];
      list.setAttribute('data-options', 'loading');
      try {
        var answer = await api(list.getAttribute('data-options-from'));
        var items = answer[list.getAttribute('data-options-key')] || [];
        list.textContent = '';
        items.forEach(function (item) {
          var option = makeOption(String(item.id), String(item.summary || item.id));
          list.appendChild(option);
        });
        list.setAttribute('data-options', 'loaded');
      } catch (error) {
        list.setAttribute('data-options', 'failed');
      }
    }
  }

  // ---------------------------------------------------------------- forms

  function fieldsOf(form) {
    return $all(form, 'input[name], select[name], textarea[name]').filter(function (el) {
      return el.name !== 'csrf_token' && !el.disabled && el.type !== 'submit' && el.type !== 'button';
    });
  }

  function fieldFor(root, key) {
    var named = $all(root, '[name]').filter(function (el) {
      return el.name === key || el.name.split('.')[0] === key;
    })[0];
    if (named) return named;
    return $all(root, '[data-join]').filter(function (el) {
      return el.getAttribute('data-join').split(/\s+/).indexOf(key) !== -1;
    })[0] || null;
  }

  function fillForm(form, status) {
    fieldsOf(form).forEach(function (el) {
      if (el.type === 'password') {
        if (!el.hasAttribute('data-blank-placeholder')) el.setAttribute('data-blank-placeholder', el.placeholder);
        el.placeholder = status['has_' + el.name]
          ? el.getAttribute('data-stored-placeholder') || 'Stored · leave blank to keep'
          : el.getAttribute('data-blank-placeholder');
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
        el.value = Object.keys(value).length ? JSON.stringify(value, null, 2) : '';
      } else {
        el.value = String(value);
      }
    });
    $all(form, '[data-join]').forEach(function (el) {
      var parts = el.getAttribute('data-join').split(/\s+/).map(function (key) {
        var value = getPath(status, key);
        return value === null || value === undefined ? '' : String(value);
      });
      el.value = parts.every(Boolean) ? parts.join('/') : parts.filter(Boolean).join('/');
    });
  }

  // "octo/hello", "https://github.com/octo/hello", "git@github.com:octo/hello.git" -> [octo, hello]
  function splitJoined(el) {
    var keys = el.getAttribute('data-join').split(/\s+/);
    var raw = el.value.trim();
    if (!raw) return keys.map(function () {
      return null;
    });
    var segments = raw.replace(/[?#].*$/, '').replace(/\.git$/, '').replace(/\/+$/, '').split(/[/:]/).filter(Boolean);
    if (segments.length < keys.length || /\s/.test(raw)) {
      throw fieldError(el, el.getAttribute('data-join-hint') || 'Enter ' + keys.join('/'));
    }
    return segments.slice(-keys.length);
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
          throw fieldError(el, 'Enter valid JSON, e.g. {"urgent": ["sev1"]}');
        }
      } else if (raw.trim() === '' && el.getAttribute('data-empty') === 'null') {
        value = null;
      } else {
        value = el.type === 'password' ? raw : raw.trim();
      }
      setPath(data, el.name, value);
    });
    $all(form, '[data-join]').forEach(function (el) {
      var keys = el.getAttribute('data-join').split(/\s+/);
      var values = splitJoined(el);
      keys.forEach(function (key, index) {
        setPath(data, key, values[index]);
      });
    });
    return data;
  }

  // data-success with {key} placeholders filled from the answer; the answer's message wins.
  function successText(el, answer, fallback) {
    if (answer && answer.message) return String(answer.message);
    var text = el.getAttribute('data-success');
    return text ? template(text, answer || {}, el.closest('[data-card]')) : fallback;
  }

  function fieldError(el, message) {
    var error = new ApiError(message, 400, { ok: false, error: message });
    error.element = el;
    return error;
  }

  function clearInvalid(form) {
    $all(form, '[aria-invalid="true"]').forEach(function (el) {
      el.removeAttribute('aria-invalid');
    });
  }

  function markInvalid(form, error) {
    var el = error.element || (error.field ? fieldFor(form, error.field) : null);
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

  // A one-time secret in the answer: a modal dialog that takes focus, the full value, Copy.
  function showSecrets(card, answer) {
    if (!card || !answer) return;
    $all(card, 'dialog[data-secret-dialog]').forEach(function (dialog) {
      var value = answer[dialog.getAttribute('data-secret-dialog')];
      if (typeof value !== 'string' || !value) return;
      var holder = $(dialog, '[data-secret-value]');
      if (holder) holder.textContent = value;
      if (!dialog.open) dialog.showModal();
      var first = holder || $(dialog, 'button');
      if (first) first.focus();
    });
  }

  function closeDialog(dialog) {
    $all(dialog, '[data-secret-value]').forEach(function (el) {
      el.textContent = '';
    });
    if (dialog.open) dialog.close();
  }

  async function submitApiForm(form) {
    var card = form.closest('[data-card]');
    var buttons = $all(form, 'button[type="submit"], button:not([type]), input[type="submit"]');
    clearInvalid(form);
    showMessage(card, '');
    var data;
    try {
      data = serialize(form);
    } catch (error) {
      markInvalid(form, error);
      showMessage(card, error.message, 'error');
      return;
    }
    buttons.forEach(function (button) {
      setBusy(button, true);
    });
    var answer = null;
    try {
      answer = await api(form.getAttribute('data-api-form'), {
        method: form.getAttribute('data-method') || 'POST',
        body: data,
      });
      $all(form, 'input[type="password"]').forEach(function (el) {
        el.value = '';
      });
      form.dispatchEvent(new CustomEvent('tt:saved', { detail: answer, bubbles: true }));
    } catch (error) {
      markInvalid(form, error);
      showError(card, error);
    } finally {
      buttons.forEach(function (button) {
        setBusy(button, false);
      });
    }
    if (!answer || !card) return;
    var cardState = cardData(card);
    if (answer.is_active) cardState.editing = false;
    var status = await refreshCard(card, { fill: true });
    var missing = status && !status.is_active ? missingOf(card, Object.assign({}, status, answer.missing ? { missing: answer.missing } : {})) : [];
    if (missing.length) {
      showMessage(card, 'Saved. To connect, add ' + listText(missing) + '.', 'warning');
    } else {
      showMessage(card, successText(form, answer, 'Saved.'), 'success');
    }
    showSecrets(card, answer);
    var verify = form.getAttribute('data-verify');
    var newSecret = Object.keys(data).some(function (key) {
      return status && status['has_' + key] && data[key];
    });
    if (verify && newSecret && answer.is_active) {
      var button = $(card, verify);
      if (button) await runAction(button);
    }
  }

  async function runAction(button) {
    var card = button.closest('[data-card]');
    var state = card ? cardData(card) : null;
    var payload = {};
    if (button.hasAttribute('data-body')) {
      try {
        payload = JSON.parse(button.getAttribute('data-body'));
      } catch (parseError) {
        payload = {};
      }
    }
    showMessage(card, '');
    setBusy(button, true);
    var answer = null;
    try {
      answer = await api(button.getAttribute('data-api-action'), {
        method: button.getAttribute('data-method') || 'POST',
        body: payload,
      });
      if (state) state.failure = null;
      // A successful Test or Sync ([data-check]) makes an older recorded error stale.
      if (state && button.hasAttribute('data-check')) state.checkedOk = Date.now();
      button.dispatchEvent(new CustomEvent('tt:action', { detail: answer, bubbles: true }));
    } catch (error) {
      // A provider's refusal shows on the card at once, whatever the server recorded.
      if (state && isProviderFailure(error)) state.failure = { error: error, at: Date.now() };
      showError(card, error);
    } finally {
      setBusy(button, false);
    }
    var concealed = button.closest('[data-reveal-target]');
    if (concealed) concealed.hidden = true;
    if (card) await refreshCard(card, { fill: !!answer });
    if (answer) {
      showMessage(card, successText(button, answer, 'Done.'), 'success');
      showSecrets(card, answer);
    }
  }

  async function toggleCard(button) {
    var card = button.closest('[data-card]');
    var status = cardData(card).status || {};
    var wanted = status.enabled === false;
    setBusy(button, true);
    try {
      await api('/api/integrations/' + card.getAttribute('data-card') + '/config', { body: { enabled: wanted } });
      showMessage(card, wanted ? 'Switched on.' : 'Switched off. Your settings and secrets are kept.', 'success');
    } catch (error) {
      showError(card, error);
    } finally {
      setBusy(button, false);
    }
    await refreshCard(card, { fill: false });
  }

  async function copyFrom(button) {
    var root = button.closest('dialog') || button.closest('[data-card]') || document;
    var source = $(root, button.getAttribute('data-copy'));
    if (!source) return;
    var text = isControl(source) ? source.value : source.textContent;
    var original = button.getAttribute('data-label') || button.textContent;
    button.setAttribute('data-label', original);
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch (clipboardError) {
      // The clipboard may be blocked (an iframe without allow="clipboard-write"): select the
      // text for a manual copy.
      if (isControl(source)) {
        source.select();
      } else {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      button.textContent = 'Press Ctrl+C to copy';
    }
    window.setTimeout(function () {
      button.textContent = original;
    }, 1800);
  }

  // ---------------------------------------------------------------- project pickers

  var projectNames = {};

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
    var selects = $all(document, '[data-installed] select[data-projects]');
    if (!selects.length) return;
    var projects = [];
    try {
      var answer = await api('/api/projects');
      if (Array.isArray(answer.projects)) projects = answer.projects;
    } catch (error) {
      projects = []; // the picker keeps saying "No projects"
    }
    projects.forEach(function (project) {
      projectNames[String(project.id)] = String(project.name);
    });
    selects.forEach(function (select) {
      fillProjects(select, projects);
    });
    $all(document, '[data-installed]').forEach(function (card) {
      if (cardData(card).status) render(card);
    });
  }

  // ---------------------------------------------------------------- embedded in an iframe

  function reportHeight() {
    if (window.parent === window) return;
    var last = 0;
    function post() {
      var height = Math.ceil(document.documentElement.getBoundingClientRect().height);
      if (height === last) return;
      last = height;
      // Only a number goes out, so any parent may read it ('*'); the parent checks our origin.
      window.parent.postMessage({ type: 'tt-gateway:height', height: height }, '*');
    }
    post();
    if (window.ResizeObserver) new ResizeObserver(post).observe(document.documentElement);
    window.addEventListener('load', post);
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
      submitApiForm(form);
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
    var card = target.closest('[data-card]');
    var el;
    if ((el = target.closest('[data-api-action]'))) {
      event.preventDefault();
      if (!el.disabled) runAction(el);
    } else if ((el = target.closest('[data-copy]'))) {
      event.preventDefault();
      copyFrom(el);
    } else if ((el = target.closest('[data-dialog-close]'))) {
      closeDialog(el.closest('dialog'));
    } else if ((el = target.closest('[data-reveal]'))) {
      var shown = card && $(card, el.getAttribute('data-reveal'));
      if (shown) {
        shown.hidden = false;
        var first = $(shown, 'button');
        if (first) first.focus();
      }
    } else if ((el = target.closest('[data-conceal]'))) {
      var panel = el.closest('[data-reveal-target]');
      if (panel) panel.hidden = true;
    } else if ((el = target.closest('[data-card-edit], [data-card-edit-done]')) && card) {
      var data = cardData(card);
      data.editing = el.hasAttribute('data-card-edit') ? !data.editing : false;
      if (!data.editing && data.status) {
        $all(card, 'form[data-api-form]').forEach(function (form) {
          fillForm(form, data.status); // Cancel drops unsaved changes
        });
      }
      render(card);
      if (data.editing) {
        var input = $(card, '[data-card-body] input:not([type="hidden"]), [data-card-body] select');
        if (input) input.focus();
      }
    } else if ((el = target.closest('[data-card-switch]'))) {
      if (!el.disabled) toggleCard(el);
    } else if (target.closest('[data-reload]')) {
      window.location.reload();
    }
  });

  // Escape also closes a secret dialog the usual way; its value is wiped then too.
  document.addEventListener('close', function (event) {
    if (event.target instanceof HTMLDialogElement) closeDialog(event.target);
  }, true);

  var TT = {
    prefix: prefix,
    csrf: csrf,
    url: url,
    api: api,
    ApiError: ApiError,
    explain: explain,
    formatDate: formatDate,
    refreshCard: refreshCard,
    loadProjects: loadProjects,
  };
  window.TT = TT;

  // A message the server put in a card (e.g. ?google=connected after an OAuth consent) is shown
  // once: its query keys leave the address, so a reload does not repeat it.
  function forgetQueryMessages() {
    var keys = [];
    $all(document, '[data-card-message][data-query-keys]').forEach(function (el) {
      keys = keys.concat(el.getAttribute('data-query-keys').split(/\s+/).filter(Boolean));
    });
    if (!keys.length || !window.history || !window.history.replaceState) return;
    var here = new URL(window.location.href);
    var changed = false;
    keys.forEach(function (key) {
      if (here.searchParams.has(key)) {
        here.searchParams.delete(key);
        changed = true;
      }
    });
    if (changed) window.history.replaceState(window.history.state, '', here.pathname + here.search + here.hash);
  }

  function start() {
    forgetQueryMessages();
    if (body.hasAttribute('data-embedded')) reportHeight();
    loadProjects();
    $all(document, '[data-card][data-installed]').forEach(function (card) {
      refreshCard(card, { fill: true });
    });
    // Deliveries and scheduled syncs change a card while the page is open: re-read the
    // statuses when the user comes back (e.g. from GitHub's webhook settings) and every
    // minute while the page is visible, which also keeps "5 minutes ago" true.
    window.addEventListener('focus', refreshAll);
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'visible') refreshAll();
    });
    window.setInterval(function () {
      if (document.visibilityState === 'visible') refreshAll();
    }, 60000);
  }

  var lastRefresh = 0;

  function refreshAll() {
    if (Date.now() - lastRefresh < 2000) return; // focus and visibilitychange come together
    lastRefresh = Date.now();
    $all(document, '[data-card][data-installed]').forEach(function (card) {
      // Never overwrite a form someone is typing in.
      var form = $(card, '[data-card-body]');
      refreshCard(card, { fill: !form || form.hidden });
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
