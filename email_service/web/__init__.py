"""The client web dashboard: static pages whose scripts read and write only the JSON API."""
