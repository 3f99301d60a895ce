// pgwarden policy plugin in JavaScript: denies schema changes (DDL) with SQLSTATE 42501 (insufficient_privilege),
// except for the databases and users the operator exempts. Built into a WebAssembly component by build.sh
// (componentize-js, world `policy-plugin` of ../../../wit/plugin.wit). See README.md.
//
// It reads pgwarden's own summary of each statement (`kind`, `command`): no SQL lexing here.

import { log } from 'pgwarden:plugin/log@0.1.1';

const KEYS = ['exempt_databases', 'exempt_users', 'message', 'hint', 'fail_on_word'];

/** What `init` read; `null` until then. */
let settings = null;

/** "a, b,,c" → ["a", "b", "c"] */
function list(value) {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export const init = {
  /** @param {Array<[string, string]>} config */
  init(config) {
    const next = {
      exemptDatabases: new Set(),
      exemptUsers: new Set(),
      message: 'schema changes are not allowed here',
      hint: undefined,
      failOnWord: undefined,
    };
    for (const [key, value] of config) {
      switch (key) {
        case 'exempt_databases':
          list(value).forEach((d) => next.exemptDatabases.add(d));
          break;
        case 'exempt_users':
          list(value).forEach((u) => next.exemptUsers.add(u));
          break;
        case 'message':
          if (value.trim() === '') throw 'js-policy: message must not be empty';
          next.message = value;
          break;
        case 'hint':
          next.hint = value === '' ? undefined : value;
          break;
        case 'fail_on_word':
          next.failOnWord = value.trim().toUpperCase() || undefined;
          break;
        default:
          // Thrown from a function returning result<_, string>: the error case, which refuses the load.
          throw `js-policy: unknown configuration key "${key}" (expected one of: ${KEYS.join(', ')})`;
      }
    }
    settings = next;
    log(
      'info',
      `js-policy: denying schema changes; exempt databases [${[...next.exemptDatabases].join(', ')}], ` +
        `exempt users [${[...next.exemptUsers].join(', ')}]`,
    );
  },
};

export const policy = {
  check(session, query) {
    if (settings === null) {
      throw new Error('js-policy: check called before init');
    }
    if (settings.failOnWord !== undefined) {
      for (const statement of query.statements) {
        if (statement.words.includes(settings.failOnWord)) {
          // An exception escaping an export that returns no result traps the component: pgwarden's
          // on_error decides (deny by default).
          throw new Error(`js-policy: fail_on_word ${settings.failOnWord} seen`);
        }
      }
    }
    if (settings.exemptDatabases.has(session.database) || settings.exemptUsers.has(session.user)) {
      return { tag: 'allow' };
    }
    for (const statement of query.statements) {
      if (statement.kind === 'schema-change') {
        return {
          tag: 'deny',
          val: {
            sqlstate: '42501',
            message: settings.message,
            detail: `${statement.command} is a schema change (database "${session.database}", user "${session.user}")`,
            hint: settings.hint,
          },
        };
      }
    }
    return { tag: 'allow' };
  },
};
