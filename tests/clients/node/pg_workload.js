// The workload of ../python/_common.py with node-postgres (`pg`), run by tests/it/drivers.rs through
// pgwarden: PGW_WORKERS concurrent async workers sharing one pg.Pool (max 20 clients), each PGW_ITERS
// iterations of seq = 0, 1, ...; by seq % 4:
//   0, 2  a transaction inserting (worker, seq, seq) that commits;
//   1     a transaction that inserts, hits `select 1/0` (22012), runs one more statement in the failed
//         transaction (25P02), rolls back, then inserts the row again in a new transaction that commits;
//   3     a transaction that inserts and rolls back.
// After every iteration the worker reads its own count and sum and counts a mismatch when they differ from
// what it committed. Halfway it reads them READ_BURST times in a row, records how many statements its server
// session has prepared (pg_prepared_statements), then destroys its pool client (`release(true)` closes the
// connection) and checks out a new one, which the pool opens afresh; at the end it destroys its client too.
//
// argv[2] names the statements:
//   `named`    every parameterised statement has a `name` (node-postgres's server-side prepared statements:
//              parsed once per connection under that name, then only bound and executed). The names are the
//              same on every connection, so a server that kept them from a previous client makes the Parse
//              fail with 42P05.
//   `unnamed`  node-postgres's default: the unnamed statement, parsed again each time (what works in
//              PgBouncer's transaction mode today).
// Settings come from PGW_HOST, PGW_PORT, PGW_USER, PGW_PASSWORD, PGW_DB. Each worker prints one line:
//   RESULT worker=W committed=N sum=S states=22012,25P02,... mismatches=M prepared=P pids=1,2

'use strict';

const pg = require('pg');

const READ_BURST = 6;
const e = process.env;
const workers = Number(e.PGW_WORKERS || '20');
const iters = Number(e.PGW_ITERS || '16');
const profile = process.argv[2] || 'named';
if (profile !== 'named' && profile !== 'unnamed') {
  console.error(`unknown statements ${JSON.stringify(profile)}: named or unnamed`);
  process.exit(2);
}

function statement(name, text, values) {
  return profile === 'named' ? { name, text, values } : { text, values };
}
const insert = (w, seq) =>
  statement('ledger_insert', 'insert into ledger (worker, seq, amount) values ($1, $2, $3)', [w, seq, seq]);
const hot = (w) =>
  statement(
    'ledger_hot',
    'select count(*) as n, coalesce(sum(amount), 0) as s from ledger where worker = $1',
    [w],
  );
const pid = () => statement('backend_pid', 'select pg_backend_pid() as pid', []);

const kind = (seq) => ['commit', 'error', 'commit', 'rollback'][seq % 4];

async function worker(pool, w) {
  const r = { committed: 0, sum: 0, states: [], mismatches: 0, prepared: -1, pids: new Set() };
  const check = async (client) => {
    const row = (await client.query(hot(w))).rows[0];
    if (Number(row.n) !== r.committed || Number(row.s) !== r.sum) r.mismatches += 1;
  };
  let client = await pool.connect();
  try {
    for (let seq = 0; seq < iters; seq++) {
      if (seq === Math.floor(iters / 2)) {
        for (let i = 0; i < READ_BURST; i++) await check(client);
        const res = await client.query('select count(*) as n from pg_prepared_statements');
        r.prepared = Number(res.rows[0].n);
        client.release(true);
        client = null;
        client = await pool.connect();
      }
      const k = kind(seq);
      if (k === 'error') {
        await client.query('begin');
        await client.query(insert(w, seq));
        for (const text of ['select 1/0', 'select 1']) {
          try {
            await client.query(text);
            r.states.push('none:succeeded');
          } catch (err) {
            r.states.push(err.code || `none:${err.name}`);
          }
        }
        await client.query('rollback');
      }
      if (k === 'commit' || k === 'error') {
        await client.query('begin');
        await client.query(insert(w, seq));
        r.pids.add((await client.query(pid())).rows[0].pid);
        await client.query('commit');
        r.committed += 1;
        r.sum += seq;
      } else if (k === 'rollback') {
        await client.query('begin');
        await client.query(insert(w, seq));
        await client.query('rollback');
      }
      await check(client);
    }
  } finally {
    // Closed, not returned to the pool idle: like the Python workers, a finished worker gives its server
    // back (in session mode an idle pool client would keep one of the 3 servers from the waiting workers).
    if (client) client.release(true);
  }
  const pids = [...r.pids].sort((a, b) => a - b).join(',');
  process.stdout.write(
    `RESULT worker=${w} committed=${r.committed} sum=${r.sum} states=${r.states.join(',')} ` +
      `mismatches=${r.mismatches} prepared=${r.prepared} pids=${pids}\n`,
  );
}

async function main() {
  const pool = new pg.Pool({
    host: e.PGW_HOST,
    port: Number(e.PGW_PORT),
    user: e.PGW_USER,
    password: e.PGW_PASSWORD,
    database: e.PGW_DB,
    max: 20,
    connectionTimeoutMillis: 20000,
  });
  // An idle client's connection dying is reported here; it must fail the run, not crash it silently.
  let idleError = null;
  pool.on('error', (err) => {
    idleError = err;
  });
  try {
    const ids = Array.from({ length: workers }, (_, w) => w);
    const outcomes = await Promise.allSettled(ids.map((w) => worker(pool, w)));
    const failed = outcomes.filter((o) => o.status === 'rejected');
    for (const o of failed) console.error('worker failed:', o.reason);
    if (idleError) console.error('idle client error:', idleError);
    if (failed.length > 0 || idleError) process.exitCode = 1;
  } finally {
    await pool.end();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
