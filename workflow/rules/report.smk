# Figures, the answers written from this run's numbers, and the tables of the report.
# `snakemake --report results/report.html` then builds the HTML report around them.
rule figures:
    input:
        summary=rules.collect.output.summary,
        metrics=rules.collect.output.metrics,
        history=rules.collect.output.history,
    output:
        *[figure_output(name) for name in FIGURE_CATEGORY],
        svg=[f"{RESULTS}/figures/{name}.svg" for name in FIGURE_CATEGORY],
    log:
        f"{RESULTS}/logs/figures.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures.tsv"
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "vaestudy figures --summary {input.summary:q} --metrics {input.metrics:q} --history {input.history:q} "
        "--out-dir {params.out:q} > {log:q} 2>&1"


rule report_text:
    input:
        summary=rules.collect.output.summary,
        metrics=rules.collect.output.metrics,
        grids=rules.collect.input.quality,
        compare=[COMPARE] if COMPARE else [],
    output:
        front=f"{RESULTS}/report/front.rst",
        about=f"{RESULTS}/report/about.rst",
        conclusions=[f"{RESULTS}/report/conclusions/{name}.rst" for name in FIGURE_CATEGORY],
        continuous=report(f"{RESULTS}/tables/continuous.csv", caption="../report/table.rst", category="Tables",
                          labels={"table": "continuous arena"}),
        binary=report(f"{RESULTS}/tables/binary.csv", caption="../report/table.rst", category="Tables",
                      labels={"table": "binary arena"}),
        discrete=report(f"{RESULTS}/tables/discrete.csv", caption="../report/table.rst", category="Tables",
                        labels={"table": "discrete arena"}),
        linear=report(f"{RESULTS}/tables/linear.csv", caption="../report/table.rst", category="Tables",
                      labels={"table": "linear arena (ground truth)"}),
        one_scale=report(f"{RESULTS}/tables/one_scale.csv", caption="../report/table.rst", category="Tables",
                         labels={"table": "every family on one scale (8-bit images)"}),
        markdown=f"{RESULTS}/tables/summary.md",
        report_md=f"{RESULTS}/report.md",
    log:
        f"{RESULTS}/logs/report_text.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_text.tsv"
    params:
        results=lambda wildcards, output: os.path.dirname(output.report_md),
        config=json.dumps(config, indent=1, sort_keys=True),
        samples=lambda wildcards, output: os.path.join(os.path.dirname(output.report_md), "figures", "samples"),
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "vaestudy report --summary {input.summary:q} --metrics {input.metrics:q} --results {params.results:q} "
        "--config-text {params.config:q} --samples-dir {params.samples:q} "
        + ("--compare {input.compare:q} " if COMPARE else "")
        + "> {log:q} 2>&1"


# Not part of `all`: `snakemake --cores 2 reference` refreshes the copy kept in git (the config's
# `reference` folder: results/reference for the default study).
rule reference:
    input:
        rules.report_text.output.report_md,
        rules.figures.output,
    output:
        os.path.join(os.path.normpath(config["reference"] or f"{RESULTS}/reference"), "report.md"),
    log:
        f"{RESULTS}/logs/reference.log",
    params:
        results=lambda wildcards, input: os.path.dirname(input[0]),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "vaestudy reference --results {params.results:q} --out {params.out:q} > {log:q} 2>&1"
