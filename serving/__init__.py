"""facegate serving: TF Serving's gRPC and REST APIs over pushed SavedModel versions.

One job per module:
  registry    versions on disk -> versions in memory; polling, hot swap, leases
  servable    one loaded version: SignatureDefs and a call per signature
  warmup      warm-up requests (TF Serving's assets.extra file, or synthetic)
  batching    server-side batching of concurrent requests
  validation  request checks against a signature, before the model runs
  core        resolve, validate, batch, run: shared by both front ends
  grpc_service  PredictionService and ModelService from tensorflow-serving-api's protos
  rest        TF Serving's REST JSON API (and Prometheus metrics)
  server      ServerOptions and ModelServer: wires it all up (`facegate serve`)
  client      PredictionClient (official stubs) and RestClient (`facegate query`)
  cli         the serve and query click commands
  testing     tiny models, version pushes and images for tests and benchmarks
See docs/SERVING.md.
"""
