"""Records into model inputs, without Beam at import: `locations` resolves and confines image locations,
`fetch` (with `http_get` and `retries`) reads image bytes within bounds, `images` decodes and preprocesses,
`tokenizer` tokenizes captions as LongCLIP does, `prepare` turns a record into a pair, and `prefetch` keeps
records in flight on threads, in order."""
