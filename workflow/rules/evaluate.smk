# Evaluate one trained model on the test split: ELBO, IWAE, bpd, active units, calibration.
rule evaluate:
    input:
        model=f"{RESULTS}/runs/{{run}}/model.pt",
    output:
        f"{RESULTS}/runs/{{run}}/metrics.json",
    log:
        f"{RESULTS}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{run}}.tsv"
    params:
        run=lambda wildcards, input: os.path.dirname(input.model),
        k=config["evaluate"]["k"],
        elbo_samples=config["evaluate"]["elbo_samples"],
        max_elements=config["evaluate"]["max_elements"],
        device=config["device"],
    threads: 1
    resources:
        mem_mb=rule_resources("evaluate", "mem_mb"),
        runtime=rule_resources("evaluate", "runtime"),
        gpu=rule_resources("evaluate", "gpu"),
    shell:
        "vaestudy evaluate --run {params.run:q} --out {output:q} --k {params.k} "
        "--elbo-samples {params.elbo_samples} --max-elements {params.max_elements} "
        "--device {params.device} --threads {threads} > {log:q} 2>&1"
