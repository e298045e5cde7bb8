# Every model's metrics -> results/tables/metrics.csv (tidy) and summary.csv (over seeds).
rule collect:
    input:
        expand(f"{RESULTS}/runs/{{run}}/metrics.json", run=RUN_NAMES),
    output:
        metrics=f"{RESULTS}/tables/metrics.csv",
        summary=f"{RESULTS}/tables/summary.csv",
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
        "vaestudy collect {input:q} --results {params.results:q} "
        "--metrics-csv {output.metrics:q} --summary-csv {output.summary:q} > {log:q} 2>&1"
