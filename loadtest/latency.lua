-- wrk hook: the latency percentiles in one unit (ms), including the 99.9th,
-- which wrk's --latency table leaves out (run.sh reads the "lat_ms" line).
done = function(summary, latency, requests)
    io.write(string.format("lat_ms %.3f %.3f %.3f\n", latency:percentile(50) / 1000,
        latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
