// kafkajs against Sluice: admin, gzip produce, and reading the records back (run with `node --test`).
//
// kafkajs has no group-less consumer, so the records are read back through kafkajs's own Fetch
// implementation (its Cluster and Broker classes, the code path its consumer uses) with explicit offsets.
// The consumer-group test runs only when the broker advertises the group APIs, and is skipped otherwise
// with the missing APIs named.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { Kafka, CompressionTypes, logLevel } = require('kafkajs')
const Cluster = require('kafkajs/src/cluster')
const { createLogger } = require('kafkajs/src/loggers')
const LoggerConsole = require('kafkajs/src/loggers/console')
const defaultSocketFactory = require('kafkajs/src/network/socketFactory')
const { startBroker } = require('./broker')

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const BASE_TS = 1763000000000
const N = 3000
const PARTITIONS = 2

let broker
let kafka

before(async () => {
  broker = await startBroker()
  kafka = new Kafka({ clientId: 'sluice-kafkajs-test', brokers: [broker.bootstrap], logLevel: logLevel.ERROR })
})

after(async () => {
  if (broker) {
    const code = await broker.stop()
    assert.equal(code, 0, `broker exited with ${code} on SIGTERM`)
  }
})

function record(i) {
  return {
    key: `key-${i}`,
    value: `value-${i}-${'z'.repeat(i % 50)}`,
    headers: { idx: String(i) },
    partition: i % PARTITIONS,
    timestamp: String(BASE_TS + i),
  }
}

async function createTopic(topic, numPartitions) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const created = await admin.createTopics({ topics: [{ topic, numPartitions, replicationFactor: 1 }], waitForLeaders: true })
    assert.equal(created, true)
  } finally {
    await admin.disconnect()
  }
}

/** Reads `count` records from `partition` starting at offset 0 through kafkajs's Broker.fetch. */
async function fetchAll(topic, partition, count) {
  const cluster = new Cluster({
    logger: createLogger({ level: logLevel.ERROR, logCreator: LoggerConsole }),
    brokers: [broker.bootstrap],
    clientId: 'sluice-kafkajs-fetch',
    socketFactory: defaultSocketFactory(),
    connectionTimeout: 3000,
    requestTimeout: 30000,
    enforceRequestTimeout: true,
  })
  await cluster.connect()
  try {
    await cluster.addTargetTopic(topic)
    await cluster.refreshMetadata()
    const leaders = cluster.findLeaderForPartitions(topic, [partition])
    const [nodeId] = Object.keys(leaders)
    const leader = await cluster.findBroker({ nodeId })
    const out = []
    let offset = 0
    const deadline = Date.now() + 30000
    while (out.length < count && Date.now() < deadline) {
      const { responses } = await leader.fetch({
        maxWaitTime: 200,
        minBytes: 1,
        maxBytes: 1 << 20,
        topics: [{ topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
      })
      for (const t of responses) {
        for (const p of t.partitions) {
          assert.equal(p.errorCode, 0, `fetch error ${p.errorCode} on ${topic}/${p.partition}`)
          for (const m of p.messages) {
            if (BigInt(m.offset) < BigInt(offset)) continue // whole batch returned from its start
            out.push(m)
            offset = Number(m.offset) + 1
          }
        }
      }
    }
    return out
  } finally {
    await cluster.disconnect()
  }
}

test('gzip produce, then Fetch returns every record identical', async () => {
  const topic = `kafkajs-gzip-${Date.now()}`
  await createTopic(topic, PARTITIONS)

  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const next = new Array(PARTITIONS).fill(0)
  try {
    for (let start = 0; start < N; start += 500) {
      const messages = []
      for (let i = start; i < Math.min(N, start + 500); i++) messages.push(record(i))
      const results = await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages })
      for (const r of results) {
        assert.equal(r.errorCode, 0)
        // The reported base offset is where this send's records for that partition start.
        assert.equal(Number(r.baseOffset), next[r.partition], `base offset of partition ${r.partition}`)
        next[r.partition] += messages.filter(m => m.partition === r.partition).length
      }
    }
  } finally {
    await producer.disconnect()
  }

  const admin = kafka.admin()
  await admin.connect()
  try {
    const offsets = await admin.fetchTopicOffsets(topic)
    const byPartition = Object.fromEntries(offsets.map(o => [o.partition, o]))
    for (let p = 0; p < PARTITIONS; p++) {
      assert.equal(byPartition[p].high, String(N / PARTITIONS), `high watermark of partition ${p}`)
      assert.equal(byPartition[p].low, '0', `log start offset of partition ${p}`)
    }
  } finally {
    await admin.disconnect()
  }

  for (let p = 0; p < PARTITIONS; p++) {
    const got = await fetchAll(topic, p, N / PARTITIONS)
    assert.equal(got.length, N / PARTITIONS, `records read from partition ${p}`)
    got.forEach((m, j) => {
      const i = j * PARTITIONS + p
      const want = record(i)
      assert.equal(m.offset, String(j))
      assert.equal(m.key.toString(), want.key)
      assert.equal(m.value.toString(), want.value)
      assert.equal(m.headers.idx.toString(), want.headers.idx)
      assert.equal(m.timestamp, want.timestamp)
    })
  }
})

// FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetCommit, OffsetFetch, LeaveGroup.
const GROUP_APIS = { 10: 'FindCoordinator', 11: 'JoinGroup', 14: 'SyncGroup', 12: 'Heartbeat', 8: 'OffsetCommit', 9: 'OffsetFetch', 13: 'LeaveGroup' }

test('gzip produce, then a consumer group consumes every record', async t => {
  const missing = Object.entries(GROUP_APIS)
    .filter(([key]) => !broker.apiVersions.has(Number(key)))
    .map(([, name]) => name)
  if (missing.length) {
    t.skip(`consumer groups not implemented in the broker yet (ApiVersions lacks ${missing.join(', ')})`)
    return
  }
  const topic = `kafkajs-group-${Date.now()}`
  await createTopic(topic, PARTITIONS)
  const producer = kafka.producer()
  await producer.connect()
  const messages = []
  for (let i = 0; i < N; i++) messages.push(record(i))
  await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages })
  await producer.disconnect()

  const consumer = kafka.consumer({ groupId: `g-${topic}`, maxWaitTimeInMs: 200 })
  await consumer.connect()
  const seen = new Map()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${seen.size} of ${N} records consumed in 60 s`)), 60000)
      consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            seen.set(Number(message.headers.idx.toString()), { partition, message })
            if (seen.size === N) {
              clearTimeout(timer)
              resolve()
            }
          },
        })
        .catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  for (let i = 0; i < N; i++) {
    const { partition, message } = seen.get(i)
    const want = record(i)
    assert.equal(partition, want.partition)
    assert.equal(message.offset, String(Math.floor(i / PARTITIONS)))
    assert.equal(message.key.toString(), want.key)
    assert.equal(message.value.toString(), want.value)
  }
})
