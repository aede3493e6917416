package io.clarion.client.conformance

import okhttp3.MediaType.Companion.toMediaType
import okhttp3.OkHttpClient
import okhttp3.Request
import okhttp3.RequestBody.Companion.toRequestBody
import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import java.util.concurrent.TimeUnit

/** The conformance control server (clients/conformance/README.md): POST JSON, JSON back. */
class Control(private val base: String) {
    private val http = OkHttpClient.Builder()
        .connectTimeout(10, TimeUnit.SECONDS)
        .readTimeout(120, TimeUnit.SECONDS) // setup starts workers; produce waits for them
        .build()

    fun post(action: String, args: JSONObject): JSONObject {
        val request = Request.Builder()
            .url(base.trimEnd('/') + "/" + action)
            .post(args.toString().toRequestBody("application/json".toMediaType()))
            .build()
        http.newCall(request).execute().use { response ->
            val body = response.body.string()
            val json = try {
                if (body.isBlank()) JSONObject() else JSONObject(body)
            } catch (error: JSONException) {
                throw AssertionError("control $action answered ${response.code} with non-JSON: ${body.take(300)}")
            }
            if (!response.isSuccessful) {
                throw AssertionError("control $action failed (${response.code}): ${json.optString("error", body.take(300))}")
            }
            return json
        }
    }
}

/** `"$v"` / `"$v.a.0.b"` strings replaced by the saved answers, whatever their JSON type. */
class Variables {
    private val saved = HashMap<String, Any>()

    fun save(name: String, value: Any) {
        saved[name] = value
    }

    fun substitute(value: Any?): Any? = when (value) {
        is JSONObject -> JSONObject().also { out -> for (key in value.keys()) out.put(key, substitute(value.get(key))) }
        is JSONArray -> JSONArray().also { out -> for (i in 0 until value.length()) out.put(substitute(value.get(i))) }
        is String -> if (REFERENCE.matches(value)) resolve(value) else value
        else -> value
    }

    private fun resolve(reference: String): Any {
        val parts = reference.substring(1).split('.')
        var current: Any = saved[parts[0]] ?: throw AssertionError("variable ${parts[0]} is not saved (in $reference)")
        for (part in parts.drop(1)) {
            current = when (current) {
                is JSONObject -> if (current.has(part)) current.get(part) else throw AssertionError("$reference: no field $part")
                is JSONArray -> current.opt(part.toIntOrNull() ?: throw AssertionError("$reference: $part is not an index"))
                    ?: throw AssertionError("$reference: no index $part")
                else -> throw AssertionError("$reference: cannot take $part of $current")
            }
        }
        return current
    }

    companion object {
        private val REFERENCE = Regex("""^\$[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$""")
    }
}
