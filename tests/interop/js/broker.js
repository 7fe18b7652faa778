// Broker fixture for the kafkajs interop tests: starts `sluice server` on a free loopback port.
//
// `startBroker()` spawns `$SLUICE_BIN server` (default target/debug/sluice) with listeners, advertised
// listeners and log.dirs overridden to a fresh temp dir, waits until it answers an ApiVersions request,
// and returns { bootstrap, port, apiVersions, stop() }. stop() sends SIGTERM and SIGKILL after 30 s.
// Every broker started is also killed when the test process exits, so none is left running.
'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..')
const START_TIMEOUT_MS = 30000
const STOP_TIMEOUT_MS = 30000

const running = new Set()
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL')
    } catch (_) {
      // already gone
    }
  }
})

function sluiceBin() {
  const bin = process.env.SLUICE_BIN || path.join(REPO_ROOT, 'target', 'debug', 'sluice')
  if (!fs.existsSync(bin)) {
    throw new Error(`broker binary ${bin} not found: build it (cargo build -p sluice-cli) or set SLUICE_BIN`)
  }
  return bin
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** ApiVersions v0 over a raw socket: resolves to a Map apiKey -> [min, max]. */
function apiVersions(port, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const clientId = Buffer.from('sluice-node-test')
    const body = Buffer.alloc(10 + clientId.length)
    body.writeInt16BE(18, 0) // ApiVersions
    body.writeInt16BE(0, 2) // v0
    body.writeInt32BE(4242, 4) // correlation id
    body.writeInt16BE(clientId.length, 8)
    clientId.copy(body, 10)
    const frame = Buffer.alloc(4 + body.length)
    frame.writeInt32BE(body.length, 0)
    body.copy(frame, 4)

    const sock = net.connect({ host: '127.0.0.1', port })
    let buf = Buffer.alloc(0)
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error('ApiVersions timed out'))
    }, timeoutMs)
    sock.on('connect', () => sock.write(frame))
    sock.on('error', err => {
      clearTimeout(timer)
      reject(err)
    })
    sock.on('data', chunk => {
      buf = Buffer.concat([buf, chunk])
      if (buf.length < 4) return
      const size = buf.readInt32BE(0)
      if (buf.length < 4 + size) return
      clearTimeout(timer)
      sock.destroy()
      const p = buf.subarray(4, 4 + size)
      if (p.readInt32BE(0) !== 4242) return reject(new Error('bad correlation id'))
      if (p.readInt16BE(4) !== 0) return reject(new Error(`ApiVersions error ${p.readInt16BE(4)}`))
      const count = p.readInt32BE(6)
      if (count < 0 || 10 + 6 * count > p.length) return reject(new Error('bad ApiVersions array'))
      const versions = new Map()
      for (let i = 0; i < count; i++) {
        const o = 10 + 6 * i
        versions.set(p.readInt16BE(o), [p.readInt16BE(o + 2), p.readInt16BE(o + 4)])
      }
      resolve(versions)
    })
  })
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function startBroker() {
  const bin = sluiceBin()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-kafkajs-'))
  const dataDir = path.join(dir, 'data')
  const logPath = path.join(dir, 'broker.log')
  const port = await freePort()
  const listener = `PLAINTEXT://127.0.0.1:${port}`
  const args = [
    'server',
    '--override', `listeners=${listener}`,
    '--override', `advertised.listeners=${listener}`,
    '--override', `log.dirs=${dataDir}`,
  ]
  const log = fs.openSync(logPath, 'a')
  const child = spawn(bin, args, {
    stdio: ['ignore', log, log],
    env: { RUST_LOG: 'info', ...process.env },
    cwd: dir,
  })
  fs.closeSync(log)
  running.add(child)
  let exitCode = null
  const exited = new Promise(resolve =>
    child.once('exit', (code, signal) => {
      exitCode = code === null ? signal : code
      running.delete(child)
      resolve(exitCode)
    })
  )
  const logTail = () => {
    try {
      return fs.readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n')
    } catch (_) {
      return '(no broker log)'
    }
  }

  const deadline = Date.now() + START_TIMEOUT_MS
  let versions = null
  let lastError = null
  while (Date.now() < deadline) {
    if (exitCode !== null) throw new Error(`sluice server exited with ${exitCode} during start-up:\n${logTail()}`)
    try {
      versions = await apiVersions(port)
      break
    } catch (err) {
      lastError = err
      await sleep(50)
    }
  }
  if (versions === null) {
    child.kill('SIGKILL')
    throw new Error(`sluice server did not answer on port ${port} (${lastError}):\n${logTail()}`)
  }

  return {
    bootstrap: `127.0.0.1:${port}`,
    port,
    apiVersions: versions,
    logTail,
    async stop() {
      if (exitCode !== null) return exitCode
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
      const code = await exited
      clearTimeout(timer)
      fs.rmSync(dir, { recursive: true, force: true })
      return code
    },
  }
}

module.exports = { startBroker, apiVersions }
