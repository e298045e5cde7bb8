# Every model's metrics and sample quality -> results/tables/metrics.csv (tidy) and summary.csv.
rule collect:
    input:
        metrics=expand(f"{RESULTS}/runs/{{run}}/metrics.json", run=RUN_NAMES),
        quality=expand(f"{RESULTS}/runs/{{run}}/quality.json", run=RUN_NAMES),
        anchors=expand(f"{RESULTS}/quality/anchors/{{arena}}.json", arena=ARENAS),
        feature=expand(f"{RESULTS}/quality/feature_net/{{arena}}.json", arena=ARENAS),
    output:
        metrics=f"{RESULTS}/tables/metrics.csv",
        summary=f"{RESULTS}/tables/summary.csv",
        history=f"{RESULTS}/tables/history.csv",
    log:
        f"{RESULTS}/logs/collect.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect.tsv"
    params:
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.metrics)),
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "vaestudy collect {input.metrics:q} --anchors {input.anchors:q} --feature-facts {input.feature:q} "
        "--results {params.results:q} --metrics-csv {output.metrics:q} --summary-csv {output.summary:q} "
        "--history-csv {output.history:q} "
        "> {log:q} 2>&1"
