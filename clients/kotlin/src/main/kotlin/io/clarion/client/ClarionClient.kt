package io.clarion.client

import io.clarion.client.core.Action
import io.clarion.client.core.ClientMachine
import io.clarion.client.core.Input
import io.clarion.client.core.MachineConfig
import io.clarion.client.core.SseParser
import io.clarion.client.core.TimerKind
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.receiveAsFlow
import kotlinx.coroutines.launch
import okhttp3.Call
import okhttp3.Callback
import okhttp3.OkHttpClient
import okhttp3.Request
import okhttp3.Response
import okhttp3.WebSocket
import okhttp3.WebSocketListener
import java.io.IOException
import java.util.concurrent.TimeUnit
import kotlin.random.Random

/** What the client delivers, in the order it happened: events, and `reset`s between them. */
sealed interface ClarionUpdate {
    data class Event(val event: ClarionEvent) : ClarionUpdate

    /** The server could not resume from our `lastId`: refetch your state; live events follow. */
    data class Reset(val reason: String) : ClarionUpdate
}

/** Callbacks, for code that prefers them to flows. Called on the client's own thread, in order. */
interface ClarionListener {
    fun onState(state: ConnectionState) {}

    fun onEvent(event: ClarionEvent) {}

    fun onReset(reason: String) {}
}

/** Options of a [ClarionClient]. */
data class ClarionOptions(
    /** One entry-point URL, or the replicas' URLs (each retry moves to the next one). */
    val urls: List<String>,
    val transport: Transport = Transport.WS,
    /** A fixed token. Without one, [tokenProvider] gives the first one. */
    val token: String? = null,
    /**
     * Returns a token: called before the first connect when [token] is null, and after
     * the server closed with 4004 (expired). Null, or the same token again, stops the
     * client (refused): the server refuses an expired token again. An exception (an
     * auth server out of reach) is retried with backoff.
     */
    val tokenProvider: (suspend () -> String?)? = null,
    val lastId: String? = null,
    val batch: Boolean = false,
    val eventTypes: List<String>? = null,
    val pingIntervalMs: Long = 30_000,
    val pongTimeoutMs: Long = 10_000,
    val backoffBaseMs: Long = 1_000,
    val backoffCapMs: Long = 60_000,
    val listener: ClarionListener? = null,
    /** Share one OkHttpClient across an app's clients; the client derives its own settings. */
    val httpClient: OkHttpClient? = null,
    val random: () -> Double = { Random.nextDouble() },
)

/**
 * A Clarion client over OkHttp: WebSocket, or Server-Sent Events where WebSockets are
 * blocked. All decisions are taken by [ClientMachine]; this class only carries them out.
 *
 * ```
 * val client = ClarionClient(ClarionOptions(listOf("wss://rt.example/ws/dashboard"), tokenProvider = { auth.fresh() }))
 * client.start()
 * client.events.collect { show(it) }
 * ```
 */
class ClarionClient(private val options: ClarionOptions) {
    private val machine = ClientMachine(
        MachineConfig(
            urls = options.urls,
            transport = options.transport,
            token = options.token,
            hasTokenProvider = options.tokenProvider != null,
            lastId = options.lastId,
            batch = options.batch,
            eventTypes = options.eventTypes,
            pingIntervalMs = options.pingIntervalMs,
            pongTimeoutMs = options.pongTimeoutMs,
            backoffBaseMs = options.backoffBaseMs,
            backoffCapMs = options.backoffCapMs,
        ),
        options.random,
    )

    @OptIn(kotlinx.coroutines.ExperimentalCoroutinesApi::class)
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default.limitedParallelism(1))
    private val inputs = Channel<Input>(Channel.UNLIMITED)
    private val updatesChannel = Channel<ClarionUpdate>(Channel.UNLIMITED)
    private val stateFlow = MutableStateFlow<ConnectionState>(ConnectionState.Idle)
    private val timers = HashMap<TimerKind, Job>()
    private val sockets = HashMap<Int, WebSocket>()
    private val calls = HashMap<Int, Call>()

    private val http: OkHttpClient = (options.httpClient ?: OkHttpClient()).newBuilder()
        .pingInterval(0, TimeUnit.MILLISECONDS) // the machine sends application pings
        .connectTimeout(10, TimeUnit.SECONDS)
        .readTimeout(0, TimeUnit.MILLISECONDS) // the machine detects silence itself
        .build()

    /** Events and resets, in order, across reconnects. One collector; buffered until collected. */
    val updates: Flow<ClarionUpdate> = updatesChannel.receiveAsFlow()

    /** The events alone (collect either this or [updates], not both). */
    val events: Flow<ClarionEvent> = updates.filterIsInstance<ClarionUpdate.Event>().map { it.event }

    val state: StateFlow<ConnectionState> = stateFlow.asStateFlow()

    /** The resume cursor the next connect will send. */
    @Volatile
    var lastId: String? = options.lastId
        private set

    init {
        scope.launch {
            for (input in inputs) {
                val actions = machine.handle(input, System.nanoTime() / 1_000_000)
                lastId = machine.lastId
                actions.forEach(::perform)
            }
        }
    }

    /** Connects (asking the token provider first when no token was given). */
    fun start() {
        inputs.trySend(Input.Start)
    }

    /** Closes the connection for good: the state becomes [ConnectionState.Closed], flows complete. */
    fun close() {
        inputs.trySend(Input.Stop)
    }

    private fun perform(action: Action) {
        when (action) {
            Action.FetchToken -> scope.launch(Dispatchers.IO) {
                val answer = try {
                    Input.TokenReady(options.tokenProvider?.invoke())
                } catch (error: CancellationException) {
                    throw error
                } catch (error: Exception) {
                    Input.TokenFailed(error.message ?: error.javaClass.simpleName)
                }
                inputs.trySend(answer)
            }
            is Action.Open -> open(action)
            is Action.Send -> sockets[action.conn]?.send(action.text)
            is Action.Close -> {
                sockets[action.conn]?.close(action.code, action.reason)
                calls.remove(action.conn)?.cancel()
            }
            is Action.Abort -> {
                sockets.remove(action.conn)?.cancel()
                calls.remove(action.conn)?.cancel()
            }
            is Action.StartTimer -> {
                timers.remove(action.kind)?.cancel()
                timers[action.kind] = scope.launch {
                    delay(action.delayMs)
                    inputs.trySend(Input.Timer(action.kind, action.conn))
                }
            }
            is Action.CancelTimer -> timers.remove(action.kind)?.cancel()
            is Action.State -> {
                stateFlow.value = action.state
                options.listener?.onState(action.state)
                if (action.state is ConnectionState.Closed) shutdown()
            }
            is Action.Event -> {
                options.listener?.onEvent(action.event)
                updatesChannel.trySend(ClarionUpdate.Event(action.event))
            }
            is Action.Reset -> {
                options.listener?.onReset(action.reason)
                updatesChannel.trySend(ClarionUpdate.Reset(action.reason))
            }
        }
    }

    private fun shutdown() {
        updatesChannel.close()
        inputs.close()
        for (socket in sockets.values) socket.cancel()
        for (call in calls.values) call.cancel()
        sockets.clear()
        calls.clear()
        scope.cancel()
    }

    private fun open(action: Action.Open) {
        // Forget the sockets of earlier connections: the machine ignores what they report.
        sockets.keys.filter { it != action.conn }.forEach { sockets.remove(it)?.cancel() }
        calls.keys.filter { it != action.conn }.forEach { calls.remove(it)?.cancel() }
        val builder = Request.Builder().url(action.url)
        for ((name, value) in action.headers) builder.header(name, value)
        if (action.subprotocols.isNotEmpty()) builder.header("Sec-WebSocket-Protocol", action.subprotocols.joinToString(", "))
        val request = builder.build()
        val conn = action.conn
        when (action.transport) {
            Transport.WS -> sockets[conn] = http.newWebSocket(request, WsListener(conn))
            Transport.SSE -> {
                val call = http.newCall(request)
                calls[conn] = call
                call.enqueue(SseCallback(conn))
            }
        }
    }

    private inner class WsListener(private val conn: Int) : WebSocketListener() {
        override fun onOpen(webSocket: WebSocket, response: Response) {
            inputs.trySend(Input.Opened(conn))
        }

        override fun onMessage(webSocket: WebSocket, text: String) {
            inputs.trySend(Input.Text(conn, text))
        }

        override fun onClosing(webSocket: WebSocket, code: Int, reason: String) {
            webSocket.close(CloseCodes.NORMAL, null) // answer the server's close frame
            inputs.trySend(Input.Closed(conn, code, reason))
        }

        override fun onClosed(webSocket: WebSocket, code: Int, reason: String) {
            inputs.trySend(Input.Closed(conn, code, reason))
        }

        override fun onFailure(webSocket: WebSocket, t: Throwable, response: Response?) {
            if (response != null && response.code != 101) {
                val body = try {
                    response.body.string()
                } catch (_: IOException) {
                    null
                }
                inputs.trySend(Input.Refused(conn, response.code, body))
            } else {
                inputs.trySend(Input.Closed(conn, CloseCodes.ABNORMAL, t.message ?: t.javaClass.simpleName))
            }
        }
    }

    private inner class SseCallback(private val conn: Int) : Callback {
        override fun onFailure(call: Call, e: IOException) {
            inputs.trySend(Input.Closed(conn, null, e.message ?: e.javaClass.simpleName))
        }

        override fun onResponse(call: Call, response: Response) {
            response.use {
                if (!response.isSuccessful) {
                    val body = try {
                        response.body.string()
                    } catch (_: IOException) {
                        null
                    }
                    inputs.trySend(Input.Refused(conn, response.code, body))
                    return
                }
                inputs.trySend(Input.Opened(conn))
                val parser = SseParser()
                try {
                    val source = response.body.source()
                    while (true) {
                        val line = source.readUtf8Line() ?: break
                        val message = parser.feed(line)
                        if (message != null) {
                            inputs.trySend(Input.Text(conn, message.data))
                        } else if (line.startsWith(":")) {
                            inputs.trySend(Input.Activity(conn))
                        }
                    }
                    inputs.trySend(Input.Closed(conn, null, "stream ended"))
                } catch (e: IOException) {
                    inputs.trySend(Input.Closed(conn, null, e.message ?: e.javaClass.simpleName))
                }
            }
        }
    }
}
