-- wrk hook: print the 99.9th latency percentile, which wrk's --latency
-- table leaves out (run.sh reads the "p999" line).
done = function(summary, latency, requests)
    io.write(string.format("p999 %.2fms\n", latency:percentile(99.9) / 1000))
end
