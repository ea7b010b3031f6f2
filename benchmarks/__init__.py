"""churnwatch against the raw aiokafka limit and Quix Streams: `python -m benchmarks`."""
