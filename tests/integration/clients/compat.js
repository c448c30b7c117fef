// node-postgres (`pg`, with `pg-copy-streams`) through pgburrow: every check of the
// compatibility matrix in one run. Usage: node compat.js CONFIG_JSON
//   CONFIG_JSON: {host, port, user, database, ca, cert, key, direct}  (file paths)
// Prints "ok <check>" per check and exits 1 at the first failure; the cancel and the
// no-certificate results are printed for the test to judge.
'use strict'
const fs = require('fs')
const { pipeline } = require('stream/promises')
const { Readable, Writable } = require('stream')
const pg = require('pg')
const copy = require('pg-copy-streams')

const cfg = JSON.parse(process.argv[2])

function config (withCert, negotiation) {
  const ssl = { ca: fs.readFileSync(cfg.ca), servername: 'localhost', rejectUnauthorized: true }
  if (withCert) {
    ssl.cert = fs.readFileSync(cfg.cert)
    ssl.key = fs.readFileSync(cfg.key)
  }
  const c = { host: cfg.host, port: cfg.port, user: cfg.user, database: cfg.database, ssl }
  if (negotiation) c.sslNegotiation = negotiation
  return c
}

function check (ok, what) {
  if (!ok) throw new Error('check failed: ' + what)
  console.log('ok ' + what)
}

async function main () {
  const client = new pg.Client(config(true))
  await client.connect()
  let r = await client.query('select 40 + 2 as v') // no parameters: simple query protocol
  check(r.rows[0].v === 42, 'simple query')
  r = await client.query('select pg_backend_pid() as p')
  check(r.rows[0].p === client.processID, 'backend pid') // from BackendKeyData
  r = await client.query('select $1::int * 2 as v, $2::text as t', [21, 'x'])
  check(r.rows[0].v === 42 && r.rows[0].t === 'x', 'extended query')
  for (let i = 1; i <= 2; i++) {
    r = await client.query({ name: 'double', text: 'select $1::int * 2 as v', values: [i] })
    check(r.rows[0].v === 2 * i, 'prepared statement ' + i)
  }
  r = await client.query("select count(*)::int as n from pg_prepared_statements where name = 'double'")
  check(r.rows[0].n === 1, 'prepared statement on the server')

  await client.query('create temp table node_copy (a int, b text)')
  let text = ''
  for (let i = 1; i <= 1000; i++) text += i + '\trow ' + i + '\n'
  await pipeline(Readable.from([Buffer.from(text)]), client.query(copy.from('COPY node_copy FROM STDIN')))
  r = await client.query('select count(*)::int as n from node_copy')
  check(r.rows[0].n === 1000, 'copy in')
  const chunks = []
  await pipeline(client.query(copy.to('COPY (select a, b from node_copy order by a) TO STDOUT')),
    new Writable({ write (chunk, enc, cb) { chunks.push(chunk); cb() } }))
  check(Buffer.concat(chunks).toString() === text, 'copy out')

  // Cancel: pg's own API (a new connection carrying CancelRequest).
  const sleeping = client.query('select pg_sleep(30)')
  const started = Date.now()
  let cancelledAt = 0
  setTimeout(() => {
    cancelledAt = Date.now()
    const canceller = new pg.Client(config(true))
    canceller.cancel(client, client.activeQuery)
  }, 500)
  let state = 'none'
  try {
    await sleeping
  } catch (e) {
    state = e.code
  }
  console.log('cancel sqlstate=' + state + ' ms_after_cancel=' + (Date.now() - (cancelledAt || started)))
  r = await client.query('select 1 as v')
  console.log('after-cancel ' + (r.rows[0].v === 1 ? 'usable' : 'broken'))
  await client.end()

  if (cfg.direct) {
    // PostgreSQL 17 style direct TLS (ALPN "postgresql"), no SSLRequest round trip.
    const d = new pg.Client(config(true, 'direct'))
    await d.connect()
    r = await d.query('select 7 as v')
    check(r.rows[0].v === 7, 'direct TLS')
    await d.end()
  }

  // Route selection as README.md shows it for node pg (the "options" startup parameter).
  const routed = new pg.Client(Object.assign(config(true), { options: '-c pgburrow.route=a' }))
  await routed.connect()
  r = await routed.query("select current_setting('pgburrow.route', true) as v")
  check(r.rows[0].v === 'a', 'route option')
  await routed.end()

  const nocert = new pg.Client(config(false))
  try {
    await nocert.connect()
    await nocert.query('select 1')
    console.log('no-cert accepted')
    await nocert.end()
  } catch (e) {
    console.log('no-cert rejected sqlstate=' + e.code + ' ' + e.message)
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(e && e.stack ? e.stack : String(e))
  process.exit(1)
})
