# Train one model of the grid. A rerun resumes from its checkpoint; a diverged run is a result.
rule train:
    input:
        data=f"{RESULTS}/data/{config['dataset']}.json",
    output:
        model=f"{RESULTS}/runs/{{run}}/model.pt",
        history=f"{RESULTS}/runs/{{run}}/history.csv",
        facts=f"{RESULTS}/runs/{{run}}/train.json",
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    params:
        args=run_args,
        out=lambda wildcards, output: os.path.dirname(output.model),
    threads: 1
    resources:
        mem_mb=rule_resources("train", "mem_mb"),
        runtime=rule_resources("train", "runtime"),
        gpu=rule_resources("train", "gpu"),
    shell:
        "vaestudy train {params.args} --threads {threads} --out {params.out:q} > {log:q} 2>&1"
